"""The engine's download through the real `huggingface_hub` client against the local Hub stand-in: totals
known up front, progress, cache reuse, resume with a Range request, and each bad input's reason."""

from __future__ import annotations

import asyncio
import errno
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sglang_dev.hub_standin import (
    DEFAULT_TOKEN,
    PADDING_FILE,
    TINY_GATED_REPO,
    TINY_REPO,
    HubStandIn,
    serving_in_thread,
    tiny_lora_repo,
    tiny_repos,
)
from sglang_engine import loading, protocol
from sglang_engine.download import DownloadFailure, DownloadProgress, classify, fetch_repo, local_snapshot
from sglang_engine.loading import LoadState
from sglang_engine.settings import EngineSettings

PAD_MB = 12  # the client writes 10 MB at a time: a resumable partial download needs a file larger than that


@pytest.fixture(scope="module")
def hub(engine_cache: Path) -> Iterator[tuple[HubStandIn, str]]:
    stand_in = HubStandIn(tiny_repos(engine_cache, lora_seeds=(1,), pad_mb=PAD_MB))
    with serving_in_thread(stand_in) as endpoint:
        yield stand_in, endpoint


@pytest.fixture(autouse=True)
def no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")


def bodies(stand_in: HubStandIn, repo: str, path: str) -> list[tuple[int, int, bool]]:
    return [(s.start, s.sent, s.complete) for s in stand_in.served if s.repo == repo and s.path == path]


def test_fetch_reports_totals_then_reuses_the_cache(hub: tuple[HubStandIn, str], tmp_path: Path) -> None:
    stand_in, endpoint = hub
    stand_in.served.clear()
    progress = DownloadProgress()
    path = fetch_repo(TINY_REPO, None, str(tmp_path), progress, endpoint=endpoint)
    repo = next(r for r in stand_in.repos if r.repo_id == TINY_REPO)
    assert sorted(p.name for p in path.iterdir()) == sorted(f.path for f in repo.files)
    assert (path / "model.safetensors").read_bytes() == repo.file("model.safetensors").data  # type: ignore
    done = progress.snapshot()
    size = sum(len(f.data) for f in repo.files)
    assert (done.bytes_done, done.bytes_total, done.files_done, done.files_total) == (
        size, size, len(repo.files), len(repo.files))
    assert done.summary().startswith("Downloading 100% (")
    # Large files came through the CDN redirect (X-Linked-* headers), small ones straight from resolve.
    assert bodies(stand_in, TINY_REPO, "model.safetensors") == [(0, len(repo.file("model.safetensors").data),
                                                                True)]  # type: ignore[union-attr]
    assert local_snapshot(TINY_REPO, None, str(tmp_path)) == path  # offline lookup: the ref was written
    stand_in.served.clear()
    again = DownloadProgress()
    assert fetch_repo(TINY_REPO, "main", str(tmp_path), again, endpoint=endpoint) == path
    assert stand_in.served == []  # every file came from the cache
    assert again.snapshot().bytes_done == size


def test_an_interrupted_download_resumes_with_a_range_request(hub: tuple[HubStandIn, str],
                                                              tmp_path: Path) -> None:
    stand_in, endpoint = hub
    stand_in.served.clear()
    stand_in.rate = 8 * 1024 * 1024  # ~1.5 s for the padding: time to stop it after its first 10 MB
    try:
        progress = DownloadProgress()
        failed: list[DownloadFailure] = []

        def run() -> None:
            try:
                fetch_repo(TINY_REPO, None, str(tmp_path), progress, endpoint=endpoint)
            except DownloadFailure as exc:
                failed.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.monotonic() + 30
        while progress.snapshot().bytes_done < 10 * 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.02)
        progress.cancel()  # what the engine does when it is stopped
        thread.join(30)
        assert failed and failed[0].reason == protocol.FAIL_DOWNLOAD and not failed[0].permanent
    finally:
        stand_in.rate = None
    first = bodies(stand_in, TINY_REPO, PADDING_FILE)
    assert len(first) == 1 and first[0][0] == 0
    size = PAD_MB * 1024 * 1024
    progress = DownloadProgress()
    fetch_repo(TINY_REPO, None, str(tmp_path), progress, endpoint=endpoint)
    (start, sent, complete), = bodies(stand_in, TINY_REPO, PADDING_FILE)[1:]
    assert start >= 10 * 1024 * 1024 and start + sent == size and complete  # resumed, not restarted
    assert progress.snapshot().bytes_done == progress.snapshot().bytes_total


@pytest.mark.parametrize(("repo", "revision", "token", "reason"), [
    ("sglang-operator/no-such-model", None, None, protocol.FAIL_REPO_NOT_FOUND),
    ("sglang-operator/no-such-model", None, "hf_other", protocol.FAIL_REPO_NOT_FOUND),
    (TINY_REPO, "v9.9", None, protocol.FAIL_REVISION_NOT_FOUND),
    (TINY_GATED_REPO, None, None, protocol.FAIL_GATED),
    (TINY_GATED_REPO, None, "hf_wrong", protocol.FAIL_GATED),
])
def test_bad_sources_fail_for_good_with_their_reason(
        hub: tuple[HubStandIn, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        repo: str, revision: str | None, token: str | None, reason: str) -> None:
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(DownloadFailure) as failure:
        fetch_repo(repo, revision, str(tmp_path), DownloadProgress(), endpoint=hub[1])
    assert (failure.value.reason, failure.value.permanent) == (reason, True)
    assert repo in failure.value.message


def test_a_gated_repo_downloads_with_the_token(hub: tuple[HubStandIn, str], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", DEFAULT_TOKEN)
    path = fetch_repo(TINY_GATED_REPO, None, str(tmp_path), DownloadProgress(), endpoint=hub[1])
    assert (path / "config.json").is_file()


def test_an_adapter_repo_downloads(hub: tuple[HubStandIn, str], tmp_path: Path) -> None:
    path = fetch_repo(tiny_lora_repo(1), None, str(tmp_path), DownloadProgress(), endpoint=hub[1])
    assert (path / "adapter_config.json").is_file() and (path / "adapter_model.safetensors").is_file()


def test_a_corrupted_file_is_detected_and_downloaded_again(hub: tuple[HubStandIn, str],
                                                            tmp_path: Path) -> None:
    stand_in, endpoint = hub
    stand_in.corrupt_once.add((tiny_lora_repo(1), "adapter_model.safetensors"))
    with pytest.raises(DownloadFailure) as failure:
        fetch_repo(tiny_lora_repo(1), None, str(tmp_path), DownloadProgress(), endpoint=endpoint)
    assert (failure.value.reason, failure.value.permanent) == (protocol.FAIL_CHECKSUM, False)
    path = fetch_repo(tiny_lora_repo(1), None, str(tmp_path), DownloadProgress(), endpoint=endpoint)
    repo = next(r for r in stand_in.repos if r.repo_id == tiny_lora_repo(1))
    served = repo.file("adapter_model.safetensors")
    assert (path / "adapter_model.safetensors").read_bytes() == served.data  # type: ignore[union-attr]


def test_failures_that_may_pass_are_retried() -> None:
    unreachable = classify(ConnectionError("connection refused"), "org/m", None)
    assert (unreachable.reason, unreachable.permanent) == (protocol.FAIL_DOWNLOAD, False)
    full = classify(OSError(errno.ENOSPC, "No space left on device"), "org/m", None)
    assert (full.reason, full.permanent) == (protocol.FAIL_DISK_FULL, True)
    assert "modelCache" in full.message


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MB tmpfs: the tiny repo's 12 MB padding file cannot fit (a real ENOSPC from the kernel)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_fails_for_good_naming_the_cache(hub: tuple[HubStandIn, str], small_disk: Path) -> None:
    with pytest.raises(DownloadFailure) as failure:
        fetch_repo(TINY_REPO, None, str(small_disk), DownloadProgress(), endpoint=hub[1])
    assert (failure.value.reason, failure.value.permanent) == (protocol.FAIL_DISK_FULL, True)
    assert "modelCache" in failure.value.message


def test_an_unreachable_hub_is_a_transient_failure(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadFailure) as failure:
        fetch_repo(TINY_REPO, None, str(tmp_path), DownloadProgress(), endpoint=f"http://127.0.0.1:{port}")
    assert failure.value.reason == protocol.FAIL_DOWNLOAD and not failure.value.permanent


async def test_the_engine_waits_on_a_permanent_failure_and_retries_a_transient_one(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[str] = []

    def fake_fetch(repo: str, revision: str | None, cache_dir: str | None,
                   progress: DownloadProgress) -> Path:
        calls.append(repo)
        if repo == "org/gone":
            raise DownloadFailure(protocol.FAIL_REPO_NOT_FOUND, "org/gone does not exist", True)
        if len(calls) == 1:
            raise DownloadFailure(protocol.FAIL_DOWNLOAD, "ConnectError: refused", False)
        return tmp_path

    monkeypatch.setattr(loading, "fetch_repo", fake_fetch)
    monkeypatch.setattr(loading, "RETRY_FIRST_S", 0.05)
    state = LoadState()
    await asyncio.wait_for(state.fetch_model(EngineSettings(model="org/flaky")), 5)
    assert calls == ["org/flaky", "org/flaky"] and state.failure is None
    assert state.phase == protocol.PHASE_LOADING_WEIGHTS

    calls.clear()
    gone = LoadState()
    waiting = asyncio.ensure_future(gone.fetch_model(EngineSettings(model="org/gone")))
    await asyncio.sleep(0.3)
    assert not waiting.done() and calls == ["org/gone"]  # reported and waiting, not retried nor crashed
    shown = gone.progress(ready=False, warmed_up=False)
    assert (shown.phase, shown.reason, shown.permanent) == (
        protocol.PHASE_FAILED, protocol.FAIL_REPO_NOT_FOUND, True)
    waiting.cancel()


async def test_local_sources_are_not_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading, "fetch_repo", lambda *a: pytest.fail("downloaded"))
    for model in ("builtin:tiny", "/models/llama", "pvc://claim/llama"):
        await LoadState().fetch_model(EngineSettings(model=model))


# ------------------------------------------------------------------------- SGLang's loading output

SGLANG_OUTPUT = (  # SGLang 0.5.23's lines around the weights (model_runner.py, weight_utils.py's tqdm bar)
    b"[2026-01-01 00:00:00] Load weight begin. avail mem=78.50 GB\n"
    b"\rLoading safetensors checkpoint shards:   0% Completed | 0/4 [00:00<?, ?it/s]"
    b"\rLoading safetensors checkpoint shards:  25% Completed | 1/4 [00:01<00:03,  1.10s/it]"
    b"\rLoading safetensors checkpoint shards:  75% Completed | 3/"
)


def test_sglang_output_drives_loading_weights_then_warming_up() -> None:
    state = LoadState()
    state.enter(protocol.PHASE_LOADING_WEIGHTS)
    for line in SGLANG_OUTPUT.decode().replace("\r", "\n").splitlines():
        state.sglang_output(line)
    shown = state.progress(ready=False, warmed_up=False)
    assert (shown.phase, shown.shards_done, shown.shards_total) == ("LoadingWeights", 1, 4)
    assert shown.summary() == "LoadingWeights 1/4 shards"
    state.sglang_output("[2026-01-01 00:00:09] Load weight end. type=LlamaForCausalLM, dtype=torch.bfloat16")
    assert state.progress(ready=False, warmed_up=False).phase == "WarmingUp"
    assert state.progress(ready=True, warmed_up=True).phase == "Serving"
    downloading = LoadState()  # SGLang's own download output (it has none here) never moves the phase back
    downloading.sglang_output("Loading safetensors checkpoint shards:  25% Completed | 1/4")
    assert downloading.phase == protocol.PHASE_STARTING


def test_sglang_output_is_relayed_byte_for_byte_and_read_line_by_line(tmp_path: Path) -> None:
    import os

    from sglang_engine.backends.output_relay import relay_output

    rest = b"4 [00:03<00:01,  1.10s/it]\nLoad weight end. type=X\n"
    source, child = os.pipe()
    lines: list[str] = []
    with (tmp_path / "relayed").open("wb") as sink:
        relay = threading.Thread(target=relay_output, args=(source, sink.fileno(), lines.append))
        relay.start()
        os.write(child, SGLANG_OUTPUT)
        os.write(child, rest)
        os.close(child)  # EOF: the relay ends
        relay.join(10)
    assert not relay.is_alive()
    assert (tmp_path / "relayed").read_bytes() == SGLANG_OUTPUT + rest
    assert lines[-2:] == [
        "Loading safetensors checkpoint shards:  75% Completed | 3/4 [00:03<00:01,  1.10s/it]",
        "Load weight end. type=X"]
    assert [protocol.parse_load_line(line) for line in lines[1:3]] == [("LoadingWeights", 0, 4),
                                                                     ("LoadingWeights", 1, 4)]
