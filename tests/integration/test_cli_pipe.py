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
        ("validate", QUICKSTART),
        ("validate", "--format", "json", QUICKSTART),
        ("--help",),
    ],
    ids=["version", "validate", "validate-json", "help"],
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


def test_validate_piped_into_head_exits_0() -> None:
    """The issue's own command line; ``head`` may close before or after the second line is
    written, and either way the exit code is validate's and nothing is printed on stderr."""
    command = (
        f'"{sys.executable}" -m a3s_gateway validate "{QUICKSTART}" | head -1; '
        'echo "status=${PIPESTATUS[0]}" >&2'
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
    assert done.stdout == f"{QUICKSTART}: configuration is valid (0 warning(s))\n"
    assert done.stderr == "status=0\n"
