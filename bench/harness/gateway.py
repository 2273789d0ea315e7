"""The gateway under test: its generated HCL config, its command line and where it comes from.

The config has one ``http`` entrypoint, one service whose only server is the shared upstream,
and the routers of the profile. With one router it is ``PathPrefix(`/`)``; the ``routers-N``
profiles build N routers in the two shapes of ``bench/bench_routing.py``: even numbers
``Host(`hN.example`) && PathPrefix(`/api`)`` (host-indexed), odd numbers ``PathPrefix(`/pN/`)``
(candidates for every request). The benchmarked router is the host rule nearest the middle of
the table. Access logs are switched off (``observability.access_log_enabled``) and the drain
bound is short so stopping is quick; everything else is the gateway's default.

The HTTP/2 profiles need nothing more: a plain entrypoint accepts h2c prior knowledge by default
(``h2c = true``) and a ``tls`` block offers ALPN ``h2, http/1.1`` by default. The gRPC profile's
service has an ``h2c://`` server (``scheme``), the backend NGINX's h2c listener; the WebSocket
profile's a ``ws://`` server (streamload's echo server), the SSE profile's a plain ``http://``
one (streamload's event server).

The TCP and UDP echo profiles have a config of their own (``layer4_config_text``): one ``tcp``
or ``udp`` entrypoint, one service whose only server is the ``tcp://`` or ``udp://`` echo
backend, and one ``tcp_routers`` block (``HostSNI(`*`)``: every connection, TLS or not) or
``udp_routers`` block binding the two; the same observability and shutdown settings.

``A3S_BENCH_GATEWAY_SRC=/path/to/src`` runs the gateway from that source tree (prepended to
``PYTHONPATH``), e.g. an older commit checked out with ``git worktree``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.procs import HOST

SRC_ENV: Final = "A3S_BENCH_GATEWAY_SRC"
REPO: Final = Path(__file__).resolve().parents[2]
READY_SINGLE: Final = "listening entrypoint=web"
READY_WORKERS: Final = "workers ready:"


@dataclass(frozen=True, slots=True)
class Routing:
    """The router table of a profile and the request that reaches the benchmarked router."""

    routers: int
    host: str | None
    path: str


def routing(routers: int, path: str) -> Routing:
    """A table of ``routers`` routers; ``path`` is the request path of a one-router table."""
    if routers <= 1:
        return Routing(1, None, path)
    middle = routers // 2
    middle -= middle % 2  # an even number: a host rule
    return Routing(routers, f"h{middle}.example", "/api/bench")


def _router(name: str, rule: str, extra: str = "") -> str:
    return f'routers "{name}" {{\n  rule    = "{rule}"\n  service = "upstream"\n{extra}}}\n'


#: The middlewares the profiles may list, by name: each lets the benchmarked request through
#: but does its real per-request work (a network check, a token bucket, header edits, an
#: origin check, a breaker's admission and outcome, a length check, an HS256 signature and
#: claims check of the ``Authorization`` token that ``bearer_token`` makes).
JWT_SECRET: Final = "bench-secret-0123456789abcdef0123"
MIDDLEWARES: Final = {
    "allow": 'type = "ip-allow"\n  allowed_ips = ["127.0.0.0/8"]',
    "limit": 'type = "rate-limit"\n  rate = 1000000000\n  burst = 1000000000',
    "tag": 'type = "headers"\n  response_headers = { "x-bench" = "1" }',
    "cors": 'type = "cors"\n  allowed_origins = ["https://app.example"]',
    "breaker": 'type = "circuit-breaker"',
    "limit-body": 'type = "body-limit"\n  max_body_bytes = 1048576',
    "auth-jwt": f'type = "jwt"\n  value = "{JWT_SECRET}"',
}


def bearer_token(lifetime: int = 86400) -> str:
    """An HS256 token ``auth-jwt`` accepts for ``lifetime`` seconds from now."""

    def encode(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    header = encode(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = encode(json.dumps({"sub": "bench", "exp": int(time.time()) + lifetime}).encode())
    signing_input = f"{header}.{claims}".encode("ascii")
    signature = hmac.new(JWT_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{claims}.{encode(signature)}"


def middleware_blocks(names: tuple[str, ...]) -> tuple[str, str]:
    """The definitions of ``names`` (keys of ``MIDDLEWARES``) and the router's list line."""
    if not names:
        return "", ""
    blocks = "".join(f'middlewares "{name}" {{\n  {MIDDLEWARES[name]}\n}}\n' for name in names)
    listed = ", ".join(f'"{name}"' for name in names)
    return blocks, f"  middlewares = [{listed}]\n"


#: The ``observability`` block per profile setting: ``default`` is the gateway's defaults but
#: the access log (metrics, tracing and request ids on); ``off`` switches everything off;
#: ``on`` also writes the access log, to ``{log}`` (a file in the product's work directory).
OBSERVABILITY: Final = {
    "default": "  access_log_enabled = false",
    "off": (
        "  access_log_enabled = false\n  metrics_enabled = false\n  tracing_enabled = false\n"
        '  request_id_header = ""'
    ),
    "on": '  access_log_path = "{log}"',
}


def config_text(
    port: int,
    upstream_port: int,
    table: Routing,
    middlewares: tuple[str, ...] = (),
    *,
    observability: str = "default",
    log: str = "",
    tls: tuple[Path, Path] | None = None,
    scheme: str = "http",
) -> str:
    """The HCL config for ``table`` listening on ``port``; the one-router table's router lists
    ``middlewares`` (names in ``MIDDLEWARES``); ``observability`` picks an ``OBSERVABILITY``
    block (``log``: the access-log file of ``on``); ``tls``: the certificate chain and key
    files of an HTTPS entrypoint; ``scheme``: of the upstream server's URL (``h2c`` for the
    gRPC backend on ``upstream_port``)."""
    tls_block = (
        f'\n  tls {{\n    cert_file = "{tls[0]}"\n    key_file = "{tls[1]}"\n  }}' if tls else ""
    )
    observed = OBSERVABILITY[observability].replace("{log}", log)
    blocks, listed = middleware_blocks(middlewares)
    if table.routers <= 1:
        routers = _router("all", "PathPrefix(`/`)", listed) + blocks
    else:
        routers = "".join(
            _router(f"r{n:04d}", f"Host(`h{n}.example`) && PathPrefix(`/api`)")
            if n % 2 == 0
            else _router(f"r{n:04d}", f"PathPrefix(`/p{n}/`)")
            for n in range(table.routers)
        )
    return f"""\
# Generated by bench/harness/gateway.py for one benchmark profile.
entrypoints "web" {{
  address = "{HOST}:{port}"{tls_block}
}}

{routers}
services "upstream" {{
  load_balancer {{
    servers = [{{ url = "{scheme}://{HOST}:{upstream_port}" }}]
  }}
}}

observability {{
{observed}
}}

shutdown_timeout_secs = 2
"""


#: The entrypoint, service and router names of the layer-4 configs, by transport.
LAYER4_NAMES: Final = {"tcp": ("tcp", "echo"), "udp": ("dgram", "uecho")}


def layer4_config_text(transport: str, port: int, backend_port: int) -> str:
    """The HCL config of the TCP or UDP echo profile (module docstring): ``transport``
    (``tcp`` or ``udp``) on ``port`` to the echo backend on ``backend_port``."""
    if transport not in LAYER4_NAMES:
        raise ValueError(f"no layer-4 config for {transport!r}: use tcp or udp")
    entrypoint, service = LAYER4_NAMES[transport]
    rule = '  rule        = "HostSNI(`*`)"\n' if transport == "tcp" else ""
    return f"""\
# Generated by bench/harness/gateway.py for one benchmark profile.
entrypoints "{entrypoint}" {{
  address  = "{HOST}:{port}"
  protocol = "{transport}"
}}

services "{service}" {{
  load_balancer {{
    servers = [{{ url = "{transport}://{HOST}:{backend_port}" }}]
  }}
}}

{transport}_routers "{service}" {{
{rule}  service     = "{service}"
  entrypoints = ["{entrypoint}"]
}}

observability {{
{OBSERVABILITY["default"]}
}}

shutdown_timeout_secs = 2
"""


def source_override() -> Path | None:
    """The source tree named by ``A3S_BENCH_GATEWAY_SRC``, if set."""
    value = os.environ.get(SRC_ENV, "").strip()
    return Path(value).resolve() if value else None


def environment() -> dict[str, str]:
    """The environment of the gateway process (``PYTHONPATH`` with the override first)."""
    env = dict(os.environ)
    override = source_override()
    if override is not None:
        parts = [str(override), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("A3S_LOG_LEVEL", None)
    return env


def command(config: Path, workers: int) -> list[str]:
    """``python -m a3s_gateway run CONFIG --workers N`` with info logging (readiness lines)."""
    return [
        sys.executable,
        "-m",
        "a3s_gateway",
        "run",
        str(config),
        "--workers",
        str(workers),
        "--log-level",
        "info",
    ]


def ready_marker(workers: int) -> str:
    """The log line that says the gateway serves: the supervisor's when it has workers."""
    return READY_SINGLE if workers == 1 else READY_WORKERS


def worker_count(workers: int) -> int:
    """How many processes serve for ``--workers`` (0 is ``os.cpu_count()``, as the CLI does)."""
    return workers or os.cpu_count() or 1


def module_file() -> str:
    """Where ``a3s_gateway`` is imported from with the gateway's environment."""
    result = subprocess.run(
        [sys.executable, "-c", "import a3s_gateway; print(a3s_gateway.__file__)"],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )
    return result.stdout.strip() or f"(import failed: {result.stderr.strip()[-300:]})"


def git_state(tree: Path) -> dict[str, str]:
    """Commit, subject and dirty flag of the git checkout holding ``tree``."""

    def git(*args: str) -> str:
        try:
            result = subprocess.run(
                ["git", "-C", str(tree), *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return f"(git failed: {error})"
        return result.stdout.strip() if result.returncode == 0 else "(unknown)"

    status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
    dirty = "unknown" if status.startswith("(") else "yes" if status else "no"
    return {
        "tree": str(tree),
        "commit": git("rev-parse", "HEAD"),
        "subject": git("log", "-1", "--format=%s"),
        "dirty": dirty,
    }


def source_digest(tree: Path) -> str:
    """SHA-256 (first 16 hex digits) over the relative paths and contents of the ``.py``
    files under ``tree``: which code ran, also for a copy outside any git checkout (a frozen
    ``A3S_BENCH_GATEWAY_SRC``), where ``git_state`` knows no commit."""
    digest = hashlib.sha256()
    for path in sorted(tree.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        digest.update(path.relative_to(tree).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def gateway_tree() -> Path:
    """The source tree the gateway runs from (the override, else this checkout's ``src``)."""
    return source_override() or REPO / "src"
