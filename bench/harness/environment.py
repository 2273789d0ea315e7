"""What the numbers come from: machine, CPU placement, tool versions, the gateway's commit.

Also checks that the load tools are installed (``bench/debian-packages.txt`` lists their Debian
packages; ``bench/harness/install-debian-packages.sh`` installs the missing ones) and records
the load average, since other work on a shared machine skews a run.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from bench.harness import cputime, gateway, nginx
from bench.procs import cpu_model

TOOLS: Final = {"nginx": "nginx-light", "wrk": "wrk", "h2load": "nghttp2-client"}
#: What the streaming profiles need besides: the compiler of ``streamload`` (and libc headers).
STREAM_TOOLS: Final = {"gcc": "gcc, libc6-dev"}


def missing_tools(
    *, streaming: bool = False, stream_module: bool = False, module: Path = nginx.STREAM_MODULE
) -> list[str]:
    """``tool (package)`` for each load tool not on ``PATH`` (``streaming``: also gcc;
    ``stream_module``: also NGINX's ``stream`` module, the file ``module``, for the TCP and UDP
    echo profiles)."""
    wanted = {**TOOLS, **(STREAM_TOOLS if streaming else {})}
    missing = [f"{tool} ({package})" for tool, package in wanted.items() if not shutil.which(tool)]
    if stream_module and not module.is_file():
        missing.append(f"{module} ({nginx.STREAM_PACKAGE})")
    return missing


def _output(argv: list[str]) -> str:
    """First non-empty line of a command's stdout+stderr (version banners go to either)."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"(unavailable: {error})"
    text = (result.stdout + result.stderr).strip()
    return text.splitlines()[0].strip() if text else "(no output)"


def load_average() -> list[float]:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return []


def collect(*, wrk_threads: int) -> dict[str, object]:
    """The environment record of a run."""
    affinity = sorted(os.sched_getaffinity(0))
    override = gateway.source_override()
    return {
        "kernel": f"{platform.system()} {platform.release()} {platform.version()}",
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "nproc": _output(["nproc"]),
        "sched_getaffinity": affinity,
        "pinning": (
            f"none: NGINX (upstream and proxy), the product and the load tool (wrk or h2load, "
            f"{wrk_threads} threads; streamload and its backends, one thread each) all run "
            f"unpinned on CPUs {affinity} and share them; the load tool competes with the "
            "product for the same cores"
        ),
        "memory": _meminfo(),
        "clk_tck": cputime.CLK_TCK,
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "nginx": _output(["nginx", "-v"]),
        "nginx_stream_module": (
            str(nginx.STREAM_MODULE) if nginx.STREAM_MODULE.is_file() else "(not installed)"
        ),
        "wrk": _output(["wrk", "-v"]),
        "h2load": _output(["h2load", "--version"]),
        "gcc": _output(["gcc", "--version"]),
        "gateway": {
            **gateway.git_state(gateway.gateway_tree()),
            "source_sha256": gateway.source_digest(gateway.gateway_tree()),
            "source_override": str(override) if override else None,
            "module_file": gateway.module_file(),
        },
        "load_average_start": load_average(),
    }


def _meminfo() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "(unknown)"
