"""The Python comparison proxies: mitmproxy (reverse mode), proxy.py, hypercorn + httpx, aiohttp.

The load harness puts each peer in front of the shared upstream next to a3s_gateway. SPEC §15's
target is that the best of them reaches at most half our throughput; issue #15's is that
a3s_gateway with one worker at least matches ``aiohttp-uvloop``, a featureless aiohttp proxy
under uvloop (the fastest mainstream Python stack: a floor for what a Python proxy costs per
request). This package installs them, says how to run them as a reverse proxy, and checks them
(``python -m bench.peers --check``). Interface (what ``bench/harness`` imports)::

    PEERS                                   # ("mitmproxy", "proxy.py", "hypercorn-httpx",
                                            #  "aiohttp-uvloop")
    ensure_peer(name)                       # create bench/.venvs/<name> if missing
    peer_command(name, listen_port=, upstream_port=)  # argv of the reverse proxy
    peer_version(name)                      # e.g. "mitmproxy 11.0.2"
    PeerUnavailable                         # raised by both when a peer can't be had

Each peer lives in a virtualenv of its own under ``bench/.venvs/<name>`` (git-ignored), made
with our interpreter (``sys.executable -m venv``) and filled from PyPI with pinned versions, so
that mitmproxy's pins of old h11/h2 never meet ours and a rerun measures the same code. The
pins are the newest releases that install on Python 3.11 (mitmproxy 11.1 and later need 3.12).
A venv counts as ready when its ``bench-peer.json`` (written last) lists the same requirements;
it records every installed distribution's version. Installs are serialised per peer with a
lock file and bounded in time.

How each peer runs (one process serving, like a3s_gateway's ``--workers 1``):

* ``mitmproxy``: ``mitmdump --mode reverse:http://127.0.0.1:UP``, quiet (``-q``,
  ``flow_detail=0``, terminal log at ``error``), its CA files in the venv, not in ``~``. It keeps
  one upstream connection per client connection alive.
* ``proxy.py``: ``proxypy_reverse.py`` (a route-everything plugin; see there) in threaded mode
  with one acceptor. Its default threadless mode stops serving at the second request on a
  keep-alive connection (its event loop dies on ``selector.modify`` of the closed upstream
  socket: FileNotFoundError, proxy.py issue #1483). proxy.py's reverse proxy opens a new
  upstream connection per request.
* ``hypercorn-httpx``: ``asgi_proxy.py`` (a streaming ASGI proxy on one ``httpx.AsyncClient``)
  under hypercorn, one worker, uvloop. ``sniffio`` is installed with it: httpcore imports it on
  every request and, when it is missing (anyio no longer depends on it), pays a failed import —
  a search of ``sys.path`` — each time.
* ``aiohttp-uvloop``: ``aiohttp_proxy.py`` (aiohttp's server and one ``ClientSession`` with a
  keep-alive connector to the upstream, the response streamed back; nothing else) under
  uvloop. The venv's import check, and the proxy at start-up, refuse to go on unless aiohttp's C
  HTTP parser is the one in use (a pure-Python fallback would make the floor look higher).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["PEERS", "VENVS", "PeerUnavailable", "ensure_peer", "peer_command", "peer_version"]

PEERS: Final[tuple[str, ...]] = ("mitmproxy", "proxy.py", "hypercorn-httpx", "aiohttp-uvloop")

HERE: Final = Path(__file__).resolve().parent
VENVS: Final = HERE.parent / ".venvs"
MARKER: Final = "bench-peer.json"
VENV_TIMEOUT_SECONDS: Final = 120.0
INSTALL_TIMEOUT_SECONDS: Final = 600.0
LOCK_POLL_SECONDS: Final = 0.2

# Prints {distribution: version} for every distribution in the venv it runs in.
_LIST_DISTRIBUTIONS: Final = (
    "import importlib.metadata as m, json; "
    "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
)


class PeerUnavailable(Exception):  # noqa: N818 -- named by the harness interface
    """A peer cannot be installed or run here; the message says why."""


@dataclass(frozen=True, slots=True)
class _Spec:
    requirements: tuple[str, ...]
    reported: tuple[str, ...]  # the distributions ``peer_version`` names
    imports: str  # an import statement that must succeed in the venv


_SPECS: Final = {
    "mitmproxy": _Spec(("mitmproxy==11.0.2",), ("mitmproxy",), "import mitmproxy.tools.main"),
    "proxy.py": _Spec(("proxy.py==2.4.10",), ("proxy.py",), "import proxy, proxy.http.server"),
    "hypercorn-httpx": _Spec(
        ("hypercorn==0.18.0", "httpx==0.29.0", "uvloop==0.23.0", "sniffio==1.3.1"),
        ("hypercorn", "httpx", "uvloop"),
        "import hypercorn.asyncio, httpx, uvloop, sniffio",
    ),
    "aiohttp-uvloop": _Spec(
        ("aiohttp==3.14.5", "uvloop==0.23.0"),
        ("aiohttp", "uvloop"),
        "import uvloop, aiohttp.web; from aiohttp import http_parser as p; "
        "assert p.HttpRequestParser is p.HttpRequestParserC "
        "and p.HttpResponseParser is p.HttpResponseParserC, 'no C parser'",
    ),
}


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise ValueError(f"unknown peer {name!r}: expected one of {', '.join(PEERS)}") from None


def venv_path(name: str) -> Path:
    """Where the virtualenv of peer ``name`` lives."""
    _spec(name)
    return VENVS / name


def _marker(name: str) -> dict[str, object] | None:
    try:
        data: object = json.loads((venv_path(name) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    return {str(key): value for key, value in data.items()}


def _ready(name: str) -> bool:
    marker = _marker(name)
    return (
        marker is not None
        and marker.get("requirements") == list(_spec(name).requirements)
        and marker.get("python") == sys.version.split()[0]
        and (venv_path(name) / "bin" / "python").exists()
    )


@contextlib.contextmanager
def _install_lock(name: str) -> Iterator[None]:
    """Hold ``bench/.venvs/.<name>.lock`` (bounded wait): one installer per peer at a time."""
    VENVS.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + INSTALL_TIMEOUT_SECONDS + VENV_TIMEOUT_SECONDS
    with (VENVS / f".{name}.lock").open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise PeerUnavailable(f"{name}: another install holds the lock") from None
                time.sleep(LOCK_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(name: str, step: str, argv: list[str], timeout: float) -> str:
    """Run one install step; its stdout, or ``PeerUnavailable`` with the output's tail."""
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{name}: {step} did not finish within {timeout:.0f}s") from None
    except OSError as error:
        raise PeerUnavailable(f"{name}: {step} could not start: {error}") from None
    if result.returncode != 0:
        lines = [
            line
            for line in (result.stdout + result.stderr).splitlines()
            if line.strip() and "is ignored: it is neither a file nor a directory" not in line
        ]
        tail = "\n".join(lines[-8:])
        raise PeerUnavailable(f"{name}: {step} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def _install(name: str, spec: _Spec, venv: Path) -> dict[str, str]:
    """Make ``venv`` and install ``spec`` into it; every installed distribution's version."""
    _run(name, "venv", [sys.executable, "-m", "venv", str(venv)], VENV_TIMEOUT_SECONDS)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input"]
    _run(name, "pip install", [*pip, *spec.requirements], INSTALL_TIMEOUT_SECONDS)
    _run(name, "import check", [python, "-c", spec.imports], VENV_TIMEOUT_SECONDS)
    listed: object = json.loads(_run(name, "version list", [python, "-c", _LIST_DISTRIBUTIONS], 60))
    if not isinstance(listed, dict):
        raise PeerUnavailable(f"{name}: unreadable package list {listed!r}")
    return {str(key): str(value) for key, value in listed.items()}


def ensure_peer(name: str) -> None:
    """Create ``bench/.venvs/<name>`` with the peer's pinned packages unless it is ready.

    Raises ``PeerUnavailable`` (with pip's last lines) when the venv can't be made, the
    packages can't be installed in time, or they don't import.
    """
    spec = _spec(name)
    if _ready(name):
        return
    with _install_lock(name):
        if _ready(name):  # another process finished it while we waited
            return
        venv = venv_path(name)
        shutil.rmtree(venv, ignore_errors=True)
        try:
            packages = _install(name, spec, venv)
        except PeerUnavailable:
            shutil.rmtree(venv, ignore_errors=True)  # no half-made venv left behind
            raise
        marker = {
            "peer": name,
            "requirements": list(spec.requirements),
            "python": sys.version.split()[0],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "packages": dict(sorted(packages.items(), key=lambda item: item[0].lower())),
        }
        (venv / MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def peer_packages(name: str) -> dict[str, str]:
    """Every distribution installed in the peer's venv with its version (after ``ensure_peer``)."""
    marker = _marker(name) if _ready(name) else None
    packages = marker.get("packages") if marker is not None else None
    if not isinstance(packages, dict):
        raise PeerUnavailable(f"{name}: not installed (run ensure_peer first)")
    return {str(key): str(value) for key, value in packages.items()}


def peer_version(name: str) -> str:
    """The peer's main packages and versions, e.g. ``"hypercorn 0.18.0, httpx 0.29.0, …"``."""
    packages = {key.lower(): value for key, value in peer_packages(name).items()}
    return ", ".join(
        f"{dist} {packages.get(dist.lower(), '(missing)')}" for dist in _spec(name).reported
    )


def peer_command(name: str, *, listen_port: int, upstream_port: int) -> list[str]:
    """argv serving ``http://127.0.0.1:listen_port`` as a reverse proxy to ``upstream_port``."""
    _spec(name)
    venv = venv_path(name)
    python = str(venv / "bin" / "python")
    upstream = f"http://127.0.0.1:{upstream_port}"
    if name == "mitmproxy":
        return [
            str(venv / "bin" / "mitmdump"),
            "--mode",
            f"reverse:{upstream}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(listen_port),
            "--quiet",
            "--set",
            "flow_detail=0",
            "--set",
            "termlog_verbosity=error",
            "--set",
            f"confdir={venv / 'mitmproxy-conf'}",
        ]
    if name == "proxy.py":
        return [
            python,
            str(HERE / "proxypy_reverse.py"),
            "--upstream-port",
            str(upstream_port),
            "--hostname",
            "127.0.0.1",
            "--port",
            str(listen_port),
            "--enable-reverse-proxy",
            "--disable-http-proxy",
            "--threaded",
            "--num-acceptors",
            "1",
            "--num-workers",
            "1",
            "--backlog",
            "4096",
            "--log-level",
            "ERROR",
        ]
    script = "aiohttp_proxy.py" if name == "aiohttp-uvloop" else "asgi_proxy.py"
    return [
        python,
        str(HERE / script),
        "--listen-port",
        str(listen_port),
        "--upstream-port",
        str(upstream_port),
    ]
