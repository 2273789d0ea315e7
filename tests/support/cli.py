"""Run the real CLI as a subprocess (``python -m a3s_gateway``) for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Mapping

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"


@dataclass(frozen=True)
class Completed:
    code: int
    stdout: str
    stderr: str


def cli_env(
    extra: Mapping[str, str] | None = None, *, drop: tuple[str, ...] = ()
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("A3S_")}
    env.update(extra or {})
    return env


def run_cli(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Completed:
    """Run ``python -m a3s_gateway ARGS`` to completion (bounded at 60 s)."""
    done = subprocess.run(
        [sys.executable, "-m", "a3s_gateway", *args],
        capture_output=True,
        text=True,
        env=dict(env) if env is not None else cli_env(),
        cwd=cwd or ROOT,
        timeout=60,
        check=False,
    )
    return Completed(done.returncode, done.stdout, done.stderr)


class RunningGateway:
    """``python -m a3s_gateway run …`` in the background; stderr is collected line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._pending = b""

    async def wait_for_line(self, needle: str) -> str:
        """Read stderr until a line containing ``needle`` appears (the caller bounds the wait)."""
        assert self.process.stderr is not None
        while True:
            for line in self.lines:
                if needle in line:
                    self.lines.remove(line)
                    return line
            chunk = await self.process.stderr.receive_some(65536)
            if not chunk:
                raise AssertionError(f"stderr closed before {needle!r}: {self.lines}")
            self._pending += chunk
            *complete, self._pending = self._pending.split(b"\n")
            self.lines.extend(part.decode(errors="replace") for part in complete)


async def start_gateway(*args: str, env: Mapping[str, str] | None = None) -> RunningGateway:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "a3s_gateway", "run", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else cli_env(),
        cwd=ROOT,
    )
    return RunningGateway(process)
