"""The transformers backend's pure decode pieces: token choice, incremental detokenization, stop strings."""

from __future__ import annotations

import pytest
import torch
from sglang_engine import tiny
from sglang_engine.backends.base import SamplingParams
from sglang_engine.backends.transformers_decode import IncrementalDetokenizer, StopStrings, choose_token
from transformers import AutoTokenizer


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    # Same cache folder as the other tiny tests of the session: built once per run.
    return AutoTokenizer.from_pretrained(
        tiny.ensure_tiny_model(tmp_path_factory.getbasetemp() / "sglang-engine-cache"))


def _params(**kw) -> SamplingParams:
    return SamplingParams(max_new_tokens=8, **kw)


NOTHING_SEEN = torch.zeros(4, dtype=torch.bool)


def test_greedy_picks_the_highest_logit() -> None:
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0])
    assert choose_token(logits, _params(temperature=0.0), NOTHING_SEEN, None) == 1


def test_repetition_penalty_demotes_seen_tokens() -> None:
    logits = torch.tensor([0.1, 3.0, 2.0, -1.0])
    seen = torch.tensor([False, True, False, False])
    assert choose_token(logits, _params(temperature=0.0, repetition_penalty=2.0), seen, None) == 2
    assert choose_token(logits, _params(temperature=0.0, repetition_penalty=1.0), seen, None) == 1


@pytest.mark.parametrize("kw", [{"top_k": 1}, {"top_p": 0.01}])
def test_top_k_and_top_p_cut_the_tail(kw: dict) -> None:
    logits = torch.tensor([1.0, 1.2, 1.1, 0.9])
    gen = torch.Generator().manual_seed(0)
    picks = {choose_token(logits, _params(temperature=5.0, **kw), NOTHING_SEEN, gen) for _ in range(50)}
    assert picks == {1}


def test_top_p_keeps_the_nucleus_only() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    gen = torch.Generator().manual_seed(0)
    picks = {choose_token(logits, _params(temperature=1.0, top_p=0.7), NOTHING_SEEN, gen) for _ in range(200)}
    assert picks == {0, 1}


def test_seeded_sampling_is_reproducible() -> None:
    logits = torch.zeros(50)

    def draw(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return [choose_token(logits, _params(temperature=1.0), torch.zeros(50, dtype=torch.bool), gen)
                for _ in range(20)]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_detokenizer_never_splits_multibyte_characters(tiny_tokenizer) -> None:
    text = "héllo, 日本語のテキスト and 🎉🚀 über café"
    ids = tiny_tokenizer.encode(text, add_special_tokens=False)
    prompt = tiny_tokenizer.encode("The quick brown fox", add_special_tokens=False)
    detok = IncrementalDetokenizer(tiny_tokenizer, prompt, skip_special_tokens=True)
    deltas = [detok.add(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert not any("\ufffd" in d for d in deltas)
    assert sum(1 for d in deltas if d) > 5, "text arrives incrementally, not all at the end"


def test_detokenizer_flushes_an_incomplete_tail(tiny_tokenizer) -> None:
    ids = tiny_tokenizer.encode("ok 🎉", add_special_tokens=False)
    detok = IncrementalDetokenizer(tiny_tokenizer, [], skip_special_tokens=True)
    emitted = "".join(detok.add(i) for i in ids[:-1])  # the emoji's last byte never arrives
    assert "\ufffd" not in emitted
    assert (emitted + detok.flush()).startswith("ok ") and detok.flush() == ""


def test_detokenizer_skips_special_tokens_when_asked(tiny_tokenizer) -> None:
    ids = tiny_tokenizer.encode("hi<|im_end|>", add_special_tokens=False)
    for skip, expected in ((True, "hi"), (False, "hi<|im_end|>")):
        detok = IncrementalDetokenizer(tiny_tokenizer, [], skip_special_tokens=skip)
        assert "".join(detok.add(i) for i in ids) + detok.flush() == expected


def test_stop_string_cuts_the_text_before_it() -> None:
    stops = StopStrings(("STOP",))
    assert stops.feed("hello ") == ("hello ", False)
    assert stops.feed("wor") == ("wor", False)
    assert stops.feed("ld ST") == ("ld ", False)  # "ST" may start the stop string: held back
    assert stops.feed("OP and more") == ("", True)


def test_held_back_text_is_released_when_no_stop_follows() -> None:
    stops = StopStrings(("STOP",))
    assert stops.feed("a S") == ("a ", False)
    assert stops.feed("x") == ("Sx", False)
    assert stops.feed("ST") == ("", False)
    assert stops.flush() == "ST"


def test_earliest_of_several_stop_strings_wins() -> None:
    stops = StopStrings(("world", "lo"))
    assert stops.feed("hello world") == ("hel", True)


def test_no_stop_strings_passes_text_through() -> None:
    stops = StopStrings(())
    assert stops.feed("abc") == ("abc", False) and stops.flush() == ""
