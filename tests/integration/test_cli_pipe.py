"""A reader that stops early is not an error (issue #13): ``validate … | head -1`` and
``version | true`` exit with the command's own code, with no traceback.

The CLI runs as a subprocess whose stdout (or stderr) is a pipe with its read end already
closed, so the first write fails for certain; with and without ``PYTHONUNBUFFERED`` (buffered,
the failure comes in the final flush instead of in ``print``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import FIXTURES, ROOT, cli_env

pytestmark = pytest.mark.integration

QUICKSTART = str(FIXTURES / "quickstart.hcl")
#: The example config: the longest summary ``validate`` prints.
EXAMPLE = str(ROOT / "examples" / "gateway.hcl")
BAD = 'entrypoints "web" {\n  address = "nowhere"\n}\n'
BUFFERING = [
    pytest.param({"PYTHONUNBUFFERED": "1"}, id="unbuffered"),
    pytest.param({}, id="buffered"),
]


def run_into_closed_pipe(*args: str, env: dict[str, str], stream: str) -> tuple[int, str]:
    """Run ``python -m a3s_gateway ARGS`` with ``stream`` ("stdout" or "stderr") a pipe nobody
    reads; the other one is captured. Returns (exit code, the captured stream's text)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    closed = {stream: write_end}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "a3s_gateway", *args],
            stdin=subprocess.DEVNULL,
            stdout=closed.get("stdout", subprocess.PIPE),
            stderr=closed.get("stderr", subprocess.PIPE),
            env=cli_env(env, drop=("PYTHONUNBUFFERED",)),
            cwd=ROOT,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    other = done.stderr if stream == "stdout" else done.stdout
    return done.returncode, other.decode()


@pytest.mark.parametrize("env", BUFFERING)
@pytest.mark.parametrize(
    "args",
    [
        ("version",),
        ("--version",),
        ("validate", QUICKSTART),
        ("validate", "--format", "json", QUICKSTART),
        ("validate", "--offline", EXAMPLE),
        ("validate", "--offline", "--format", "json", EXAMPLE),
        ("--help",),
        ("run", "--help"),
        ("validate", "--help"),
        ("demo", "--help"),
    ],
    ids=[
        "version",
        "--version",
        "validate",
        "validate-json",
        "validate-summary",
        "validate-summary-json",
        "help",
        "run-help",
        "validate-help",
        "demo-help",
    ],
)
def test_a_closed_stdout_exits_quietly_with_the_commands_code(
    args: tuple[str, ...], env: dict[str, str]
) -> None:
    code, stderr = run_into_closed_pipe(*args, env=env, stream="stdout")
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert stderr == ""
    assert code == 0


@pytest.mark.parametrize("env", BUFFERING)
def test_an_invalid_config_still_exits_1_when_stdout_is_closed(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = str(tmp_path / "bad.hcl")
    Path(bad).write_text(BAD, encoding="utf-8")
    for args in (("validate", bad), ("validate", "--format", "json", bad)):
        code, stderr = run_into_closed_pipe(*args, env=env, stream="stdout")
        assert "Traceback" not in stderr
        assert code == 1  # a configuration error, as with a reader


@pytest.mark.parametrize("env", BUFFERING)
def test_a_closed_stderr_keeps_the_exit_code_of_an_invalid_config(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = str(tmp_path / "bad.hcl")
    Path(bad).write_text(BAD, encoding="utf-8")
    code, stdout = run_into_closed_pipe("validate", bad, env=env, stream="stderr")
    assert (code, stdout) == (1, "")


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        (f'validate "{QUICKSTART}"', f"{QUICKSTART}: configuration is valid (0 warning(s))"),
        (f'validate --offline "{EXAMPLE}"', f"{EXAMPLE}: configuration is valid ("),
        ("version", "a3s-gateway "),
        ("run --help", "usage: a3s-gateway run "),
    ],
    ids=["validate", "validate-summary", "version", "run-help"],
)
def test_a_command_piped_into_head_exits_0(args: str, first_line: str) -> None:
    """The issue's own command line; ``head`` may close before or after the second line is
    written, and either way the exit code is the command's and nothing is printed on stderr
    (``cat``/``grep`` users see no traceback; the status is not 141: Python ignores SIGPIPE
    and the CLI turns the broken pipe into a quiet end of output)."""
    command = (
        f'"{sys.executable}" -m a3s_gateway {args} | head -1; echo "status=${{PIPESTATUS[0]}}" >&2'
    )
    done = subprocess.run(
        ["bash", "-c", command],
        capture_output=True,
        text=True,
        env=cli_env(),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.stdout.startswith(first_line)
    assert done.stdout.count("\n") == 1
    assert done.stderr == "status=0\n"
