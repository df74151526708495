"""The console scripts as people use them: --help on every command exits 0 and describes every flag,
--version, an unknown command says so and exits 2, and a closed pipe (`... | head`) is quiet."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
COMMANDS = [
    ["sglang-engine"], ["sglang-engine", "serve"],
    ["sglang-operator"], ["sglang-operator", "run"], ["sglang-operator", "render"],
    ["sglang-operator", "dev"], *(["sglang-operator", "dev", verb]
                                  for verb in ("apiserver", "up", "down", "status", "logs")),
]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_exits_0_on_stdout(command):
    out = run(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: ") and not out.stderr
    assert len(out.stdout.splitlines()) > 3  # more than a usage line


def _parsers() -> list[argparse.ArgumentParser]:
    from sglang_dev.cluster import cli as cluster_cli
    from sglang_dev.emulator import main as emulator_main
    from sglang_engine.settings import build_parser as engine_parser
    from sglang_operator.settings import build_parser as run_parser

    verbs = ("up", "down", "status", "logs")
    found = [engine_parser(), run_parser(), *(cluster_cli._parser(v) for v in verbs)]
    captured: list[argparse.ArgumentParser] = []
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        captured.append(self)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        for main, argv in ((emulator_main.main, []), (__import__("sglang_operator.render").render.main, [])):
            with pytest.raises(SystemExit):
                main(argv)
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    return found + captured


def test_every_flag_of_every_command_is_described():
    for parser in _parsers():
        assert parser.description, parser.prog
        for action in parser._actions:
            assert action.help, f"{parser.prog}: {action.option_strings or action.dest} has no help"


@pytest.mark.parametrize("script", ["sglang-engine", "sglang-operator"])
def test_version(script):
    from importlib.metadata import version

    out = run(script, "--version")
    assert (out.returncode, out.stdout.strip()) == (0, f"{script} {version('sglang-operator')}")


@pytest.mark.parametrize("command", [["sglang-engine", "srve"], ["sglang-operator", "rnu"],
                                     ["sglang-operator", "dev", "upp"]], ids=" ".join)
def test_an_unknown_command_says_so_and_exits_2(command):
    out = run(*command)
    assert out.returncode == 2
    assert f"unknown {'verb' if 'dev' in command else 'command'} {command[-1]!r}" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("command", [["sglang-engine", "serve", "--help"], ["sglang-operator", "--help"],
                                     ["sglang-operator", "render", "-f", "examples/tiny.yaml"]], ids=" ".join)
def test_a_closed_pipe_is_quiet(command):
    """What `... | head` does: the reader is gone before the command writes."""
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen([str(BIN / command[0]), *command[1:]], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
