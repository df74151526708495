"""Untrusted configuration is refused: adapter sources (schemes, `..`, absolute paths outside the configured
roots, symlinks out of a root) and `extraArgs` that would set a flag the engine owns, in any spelling
argparse accepts, on both sides (the operator's spec validation and the engine's own check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_fakes import make_settings
from hypothesis import given
from hypothesis import strategies as st
from sglang_engine.adapters import resolve_source
from sglang_engine.protocol import ENGINE_OWNED_FLAGS, refuse_owned_flags
from sglang_operator.spec import SpecError, parse_spec


@pytest.mark.parametrize("source", [
    "http://example.com/lora", "file:///etc/passwd", "s3://bucket/lora", "hf://org/name", "pvc://c/a/../../etc",
    "/opt/adapters/../../etc", "relative/dir/x", "../x", "~/x", "org/name/extra", "builtin:../../x", "",
])
def test_sources_with_other_schemes_or_escapes_are_refused(engine_cache: Path, source: str) -> None:
    with pytest.raises(ValueError, match="source"):
        resolve_source(source, None, make_settings(engine_cache))


def test_absolute_sources_must_lie_inside_the_configured_roots(engine_cache: Path, tmp_path: Path) -> None:
    root = tmp_path / "adapters"
    (root / "sql").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    settings = make_settings(engine_cache, source_roots=(root,))
    assert resolve_source(str(root / "sql"), None, settings) == root / "sql"
    for outside in ("/etc", str(tmp_path / "adaptersX" / "sql"), str(root / "escape")):
        with pytest.raises(ValueError, match="outside the allowed roots"):
            resolve_source(outside, None, settings)
    # Without roots, any absolute path inside the image is allowed (the documented default).
    assert resolve_source("/etc", None, make_settings(engine_cache)) == Path("/etc")


def _spellings() -> st.SearchStrategy[str]:
    """An owned flag as argparse would accept it: whole or a prefix that picks it among the owned flags, with
    or without `=value`."""
    def prefixes(flag: str) -> list[str]:
        def picks(prefix: str) -> bool:
            return prefix == flag or not any(o != flag and o.startswith(prefix) for o in ENGINE_OWNED_FLAGS)

        return [flag[:n] for n in range(3, len(flag) + 1) if picks(flag[:n])]

    spelled = st.sampled_from(sorted(ENGINE_OWNED_FLAGS)).flatmap(lambda f: st.sampled_from(prefixes(f)))
    return st.tuples(spelled, st.sampled_from(["", "=1", "=0.0.0.0", "=/models/x"])).map("".join)


SAFE_ARGS = st.lists(st.sampled_from(["--schedule-policy", "lpm", "--chunked-prefill-size", "4096"]),
                     max_size=4)


@given(before=SAFE_ARGS, owned=_spellings(), after=SAFE_ARGS)
def test_extra_args_never_set_an_owned_flag(before: list[str], owned: str, after: list[str]) -> None:
    extra = [*before, owned, *after]
    with pytest.raises(ValueError, match="set by the engine"):
        refuse_owned_flags(extra)
    with pytest.raises(SpecError) as err:
        parse_spec({"model": "org/m", "engine": {"extraArgs": extra}})
    assert err.value.field == f"spec.engine.extraArgs[{len(before)}]"


@given(args=SAFE_ARGS)
def test_extra_args_the_engine_does_not_own_pass(args: list[str]) -> None:
    refuse_owned_flags(args)
    assert parse_spec({"model": "org/m", "engine": {"extraArgs": args}}).engine.extra_args == tuple(args)
