"""NGINX configurations of the harness: the shared upstream and the reverse-proxy baseline.

Both run in the foreground (``daemon off;``) from a prefix directory of their own with every
path (pid, error log, temp directories) inside it, started as ``nginx -c CONF -p PREFIX -e LOG``
so nothing touches ``/etc/nginx``, ``/run`` or port 80. Access logs are off in both.

The upstream answers ``/`` and ``/post`` with a fixed 42-byte body (``return 200``; a POST body
is read and discarded) and ``/1m`` with a 1 MiB static file written into its prefix. The proxy
is the SPEC §15 baseline: ``proxy_pass`` to an ``upstream {}`` block with ``keepalive 128``,
``proxy_http_version 1.1`` and an empty ``Connection`` header, otherwise NGINX's defaults
except ``client_body_buffer_size 64k``: with the default (16k) NGINX spools the 16 KiB POST body
to a temp file, which no proxy in this comparison does.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Final

from bench.procs import HOST

if TYPE_CHECKING:
    from pathlib import Path

NGINX: Final = "nginx"
BODY_42: Final = "a3s bench upstream: a 42-byte body, hello\n"
DOWNLOAD_BYTES: Final = 1024 * 1024
POST_BYTES: Final = 16 * 1024
KEEPALIVE_REQUESTS: Final = 10_000_000

assert len(BODY_42.encode()) == 42  # the body size is part of the profile names


def _common(prefix: Path, workers: str) -> str:
    return f"""\
daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 4096;
}}
"""


def _temp_paths(prefix: Path) -> str:
    return "\n".join(
        f"    {kind}_temp_path {prefix}/tmp/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )


def write_upstream(prefix: Path, port: int) -> Path:
    """Write the upstream's config (and its 1 MiB file) into ``prefix``; the config path."""
    (prefix / "www").mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    (prefix / "www" / "1m").write_bytes(bytes(range(256)) * (DOWNLOAD_BYTES // 256))
    body = BODY_42.replace("\n", "\\n")
    conf = prefix / "nginx.conf"
    conf.write_text(
        _common(prefix, "auto")
        + f"""\
http {{
    access_log off;
    default_type text/plain;
    sendfile on;
    tcp_nopush on;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout 120s;
{_temp_paths(prefix)}
    server {{
        listen {HOST}:{port} backlog=4096;
        client_max_body_size 1m;
        client_body_buffer_size 64k;
        location / {{
            return 200 "{body}";
        }}
        location = /post {{
            return 200 "{body}";
        }}
        location = /1m {{
            default_type application/octet-stream;
            root {prefix}/www;
        }}
    }}
}}
"""
    )
    return conf


def write_proxy(
    prefix: Path,
    port: int,
    upstream_port: int,
    workers: str,
    tls: tuple[Path, Path] | None = None,
) -> Path:
    """Write the reverse proxy's config into ``prefix``; ``workers`` is a count or ``auto``;
    ``tls``: the certificate chain and key files of an HTTPS listener."""
    listen = f"{HOST}:{port}" + (" ssl" if tls else "")
    certificate = (
        f"        ssl_certificate {tls[0]};\n        ssl_certificate_key {tls[1]};\n"
        "        ssl_protocols TLSv1.2 TLSv1.3;\n"
        if tls
        else ""
    )
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        _common(prefix, workers)
        + f"""\
http {{
    access_log off;
    keepalive_requests {KEEPALIVE_REQUESTS};
    keepalive_timeout 120s;
{_temp_paths(prefix)}
    upstream bench_upstream {{
        server {HOST}:{upstream_port};
        keepalive 128;
        keepalive_requests {KEEPALIVE_REQUESTS};
    }}
    server {{
        listen {listen} backlog=4096;
{certificate}        client_max_body_size 1m;
        client_body_buffer_size 64k;
        location / {{
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""
    )
    return conf


def command(conf: Path, prefix: Path) -> list[str]:
    """The argv that runs NGINX in the foreground with ``conf``."""
    return [NGINX, "-c", str(conf), "-p", f"{prefix}/", "-e", str(prefix / "error.log")]


def check_config(conf: Path, prefix: Path) -> None:
    """``nginx -t`` on the config; raises ``RuntimeError`` with NGINX's message on failure."""
    result = subprocess.run(
        [*command(conf, prefix), "-t", "-q"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t failed for {conf}:\n{result.stderr.strip()}")
