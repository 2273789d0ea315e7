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

The HTTP/2 profiles (``h2load``) use the same proxy with ``http2`` on its ``listen`` line
(NGINX 1.22 has no ``http2 on``): with ``ssl`` that is h2 by ALPN, without it h2c with prior
knowledge only. The gRPC profile's proxy is ``grpc_pass grpc://`` to an ``upstream {}`` block
with ``keepalive 128``, and its backend is a second server of the upstream NGINX on an h2c
listener (``grpc_port``) that answers every call with ``GRPC_FRAME`` (one length-prefixed
message: a protobuf ``bytes`` field 1 holding the 42-byte body), ``content-type:
application/grpc`` and the trailer ``grpc-status: 0``. That backend reads the request body
before it answers (``mirror`` with ``mirror_request_body on``, the one stock module that reads
a body and then lets the request go on): answering first would make it reset the stream after
its response (``RST_STREAM NO_ERROR``), and NGINX's ``grpc_pass`` fails the next call on that
pooled connection with "upstream sent frame for unknown stream" (a few calls in ten
thousand without it). The answer itself is ``return 200`` with the message bytes in the config
string (NUL bytes included: NGINX keeps a string's length), reached through ``error_page 404
405 =200`` from the static handler, which refuses the POST after the mirror has read its body.

The streaming profiles' backends are ``streamload``'s servers, not NGINX; the proxy in front of
them is configured as NGINX's documentation says for each: WebSocket with ``proxy_http_version
1.1`` and the ``Upgrade`` and ``Connection "upgrade"`` headers set toward the backend (the
upgraded connection then is a byte relay), SSE with ``proxy_buffering off`` (each read from
the backend goes to the client at once) over the same keep-alive upstream settings.

The TCP and UDP echo profiles' proxy is NGINX's ``stream`` module, a dynamic module on Debian
(package ``libnginx-mod-stream``), loaded by path (``load_module``, since the harness's
configs do not include ``/etc/nginx/modules-enabled``): a ``stream {}`` block with an
``upstream {}`` of the one backend and one ``server`` that ``proxy_pass``es to it, listening on
TCP or with ``udp``. Otherwise the module's defaults: TCP_NODELAY on both sides, 16 KiB
buffers, no access log. For UDP the defaults are the ones a long-lived echo session needs:
``proxy_responses`` unset (any number of answers per client datagram) and ``proxy_requests``
0 (every datagram from one client address stays in its session), so each client socket is one
session with an upstream socket of its own for as long as it sends; ``proxy_timeout`` (an idle
session's end) is ``UDP_SESSION_TIMEOUT`` instead of NGINX's 10 minutes, so the sessions of
finished load runs do not linger through the rest of the run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final, Literal

from bench.procs import HOST

NGINX: Final = "nginx"
#: Debian's ``libnginx-mod-stream``: the ``stream`` module of the TCP and UDP echo profiles.
STREAM_MODULE: Final = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
STREAM_PACKAGE: Final = "libnginx-mod-stream"
#: ``proxy_timeout`` of the UDP proxy: an idle session's end.
UDP_SESSION_TIMEOUT: Final = "30s"
BODY_42: Final = "a3s bench upstream: a 42-byte body, hello\n"
DOWNLOAD_BYTES: Final = 1024 * 1024
POST_BYTES: Final = 16 * 1024
KEEPALIVE_REQUESTS: Final = 10_000_000

assert len(BODY_42.encode()) == 42  # the body size is part of the profile names

#: The gRPC method the gRPC profile calls (any path reaches the backend's answer).
GRPC_PATH: Final = "/a3s.bench.Bench/Unary"


def grpc_frame(message: bytes) -> bytes:
    """``message`` as one gRPC length-prefixed message: not compressed, 4-byte length."""
    return b"\x00" + len(message).to_bytes(4, "big") + message


#: The message of a call and of its answer: protobuf field 1 (``bytes``) holding ``BODY_42``.
GRPC_FRAME: Final = grpc_frame(b"\x0a" + bytes([len(BODY_42)]) + BODY_42.encode())
assert len(GRPC_FRAME) == 49


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


def nginx_string(data: bytes) -> str:
    """``data`` (ASCII, no ``$``) as a quoted NGINX string, control bytes kept as they are."""
    if any(byte > 0x7F for byte in data) or b"$" in data:
        raise ValueError("only ASCII without '$' goes into an NGINX string here")
    text = data.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
    return '"' + text.replace("\n", "\\n") + '"'


def _grpc_backend(prefix: Path, port: int) -> str:
    """The gRPC backend's server block (module docstring)."""
    (prefix / "grpc-root").mkdir(parents=True, exist_ok=True)
    return f"""\
    server {{
        listen {HOST}:{port} http2 backlog=4096;
        root {prefix}/grpc-root;
        location / {{
            mirror /a3s-bench-sink;
            mirror_request_body on;
            log_not_found off;
            error_page 404 405 =200 @grpc_reply;
        }}
        location = /a3s-bench-sink {{
            internal;
            return 204;
        }}
        location @grpc_reply {{
            default_type application/grpc;
            add_trailer grpc-status 0 always;
            return 200 {nginx_string(GRPC_FRAME)};
        }}
    }}
"""


def write_upstream(prefix: Path, port: int, grpc_port: int | None = None) -> Path:
    """Write the upstream's config (and its 1 MiB file) into ``prefix``; the config path.
    ``grpc_port``: also serve the gRPC backend there (h2c)."""
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
{_grpc_backend(prefix, grpc_port) if grpc_port is not None else ""}}}
"""
    )
    return conf


def write_proxy(
    prefix: Path,
    port: int,
    upstream_port: int,
    workers: str,
    tls: tuple[Path, Path] | None = None,
    *,
    http2: bool = False,
    grpc: bool = False,
    stream: str | None = None,
) -> Path:
    """Write the reverse proxy's config into ``prefix``; ``workers`` is a count or ``auto``;
    ``tls``: the certificate chain and key files of an HTTPS listener; ``http2``: the listener
    speaks HTTP/2 (h2 with ``tls``, else h2c prior knowledge); ``grpc``: ``grpc_pass`` to
    ``upstream_port`` (the gRPC backend) instead of ``proxy_pass`` (implies ``http2``);
    ``stream``: ``websocket`` or ``sse``, the streaming profiles' settings (module docstring)."""
    listen = f"{HOST}:{port}" + (" ssl" if tls else "") + (" http2" if http2 or grpc else "")
    forward = "            grpc_pass grpc://bench_upstream;\n" if grpc else _proxy_pass(stream)
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
{forward}        }}
    }}
}}
"""
    )
    return conf


def write_stream_proxy(
    prefix: Path,
    port: int,
    backend_port: int,
    workers: str,
    transport: Literal["tcp", "udp"],
    *,
    module: Path = STREAM_MODULE,
) -> Path:
    """Write the layer-4 proxy's config (module docstring) into ``prefix``: ``transport`` on
    ``port`` to the backend on ``backend_port``. Raises ``RuntimeError`` when ``module`` (the
    ``stream`` module) is not installed."""
    if not module.is_file():
        raise RuntimeError(
            f"NGINX's stream module {module} is missing: install the Debian package "
            f"{STREAM_PACKAGE} (bash bench/harness/install-debian-packages.sh)"
        )
    if transport == "udp":
        listen = f"{HOST}:{port} udp"
        extra = f"        proxy_timeout {UDP_SESSION_TIMEOUT};\n"
    else:
        listen = f"{HOST}:{port} backlog=4096"
        extra = ""
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"load_module {module};\n"
        + _common(prefix, workers)
        + f"""\
stream {{
    upstream bench_backend {{
        server {HOST}:{backend_port};
    }}
    server {{
        listen {listen};
        proxy_pass bench_backend;
{extra}    }}
}}
"""
    )
    return conf


def _proxy_pass(stream: str | None) -> str:
    """The ``proxy_pass`` lines of the proxy's location for a profile's ``stream`` kind."""
    lines = ["proxy_pass http://bench_upstream;", "proxy_http_version 1.1;"]
    if stream == "websocket":
        lines += [
            "proxy_set_header Upgrade $http_upgrade;",
            'proxy_set_header Connection "upgrade";',
        ]
    elif stream == "sse":
        lines += ['proxy_set_header Connection "";', "proxy_buffering off;"]
    elif stream is None:
        lines.append('proxy_set_header Connection "";')
    else:
        raise ValueError(f"unknown stream kind {stream!r}")
    return "".join(f"            {line}\n" for line in lines)


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
