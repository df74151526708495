"""`sglang-engine serve` in-process: exit codes for bad flags, JSON logs, stopping during startup."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from pathlib import Path

import pytest
from engine_procs import free_port
from sglang_engine.server import main
from sglang_engine.server.main import JsonFormatter, _unless_stopped, serve


@pytest.mark.parametrize(("argv", "flag"), [
    (["--model", "m", "--tp-size", "0"], "--tp-size"),
    (["--model", "m", "--mem-fraction-static", "1.5"], "--mem-fraction-static"),
    (["--model", "m", "--max-body-bytes", "10"], "--max-body-bytes"),
    (["--model", "m", "--log-level", "chatty"], "--log-level"),
])
def test_bad_flag_values_exit_2_naming_the_flag(argv: list[str], flag: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(argv) == 2
    assert flag in capsys.readouterr().err


def test_an_unreadable_secret_file_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve(["--model", "m", "--admin-token-file", "/nonexistent/token"]) == 2
    assert "/nonexistent/token" in capsys.readouterr().err


def test_a_backend_that_cannot_start_exits_1_with_a_clear_message(
        engine_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    monkeypatch.setattr(main, "setup_logging", lambda settings: None)  # keep pytest's log capture
    last_words = tmp_path / "termination-log"
    last_words.touch()  # the kubelet creates the file; the engine only writes into an existing one
    argv = ["--model", "/nonexistent/model", "--backend", "transformers", "--port", str(free_port()),
            "--cache-dir", str(engine_cache), "--termination-log", str(last_words)]
    assert serve(argv) == 1
    err = capsys.readouterr().err
    assert "failed to start" in err and "/nonexistent/model does not exist" in err
    said = last_words.read_text()
    assert said.startswith("ModelLoadFailed: ") and "/nonexistent/model does not exist" in said


def test_serving_without_an_api_key_logs_a_security_warning(
        engine_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(main, "setup_logging", lambda settings: None)
    argv = ["--model", "/nonexistent/model", "--backend", "transformers", "--port", str(free_port()),
            "--cache-dir", str(engine_cache)]
    with caplog.at_level(logging.WARNING):
        assert serve(argv) == 1  # the warning comes at listen time, before the backend starts
    assert "SECURITY: no API key: /v1/* answers anyone who can reach port" in caplog.text


def test_json_log_lines_are_json_with_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord("sglang_engine", logging.ERROR, __file__, 1, "failed %s", ("x",),
                                   exc_info=sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "error" and line["msg"] == "failed x" and "RuntimeError: boom" in line["exc"]


async def test_a_signal_during_startup_cancels_the_startup_work() -> None:
    stop = asyncio.Event()
    cancelled = asyncio.Event()

    async def slow_start() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await _unless_stopped(slow_start(), stop) is False
    assert cancelled.is_set()


async def test_startup_failures_propagate_and_success_reports_true() -> None:
    async def fails() -> None:
        raise OSError("model path missing")

    async def works() -> None:
        return None

    with pytest.raises(OSError, match="model path missing"):
        await _unless_stopped(fails(), asyncio.Event())
    assert await _unless_stopped(works(), asyncio.Event()) is True
