# a3s_gateway/demo/demo.hcl: the config of `a3s-gateway demo`, shipped in the package.
#
# The demo starts its backends on free loopback ports, makes a throwaway CA and a localhost
# certificate in a temporary directory (removed when the demo stops), and passes all of them in
# through the environment mapping given to load_config_text; to check this file by hand
# (--offline: without the demo's certificate files):
#
#   A3S_DEMO_ECHO_A=9001 A3S_DEMO_ECHO_B=9002 A3S_DEMO_STREAM=9003 A3S_DEMO_GRPC=9004 \
#     A3S_DEMO_TCP_ECHO=9005 A3S_DEMO_TLS_ECHO=9006 \
#     A3S_DEMO_CERT_DIR=/tmp a3s-gateway validate --offline src/a3s_gateway/demo/demo.hcl
#
# Both HTTP entrypoints speak HTTP/2 as well as HTTP/1.1: web by prior knowledge (h2c, on by
# default on plaintext entrypoints), websecure by ALPN h2. The third, tcp, carries TCP
# connections to two echo backends (tcp_routers at the end).

# The demo's ports are no secret: shown as they are in /config and the validate summary
# (every other interpolated value would be shown as "<redacted>").
public_env = [
  "A3S_DEMO_PORT", "A3S_DEMO_ADMIN_PORT", "A3S_DEMO_ECHO_A", "A3S_DEMO_ECHO_B", "A3S_DEMO_STREAM",
  "A3S_DEMO_GRPC", "A3S_DEMO_TLS_PORT", "A3S_DEMO_CERT_DIR", "A3S_DEMO_TCP_PORT",
  "A3S_DEMO_TCP_ECHO", "A3S_DEMO_TLS_ECHO",
]

entrypoints "web" {
  address = "127.0.0.1:${A3S_DEMO_PORT:-8080}"
}

# The same routes over HTTPS, with the certificate the demo made for localhost at start
# (clients trust it with the printed CA file: curl --cacert <dir>/ca.pem https://localhost:8443/).
entrypoints "websecure" {
  address = "127.0.0.1:${A3S_DEMO_TLS_PORT:-8443}"
  tls {
    cert_file = "${A3S_DEMO_CERT_DIR}/localhost.pem"
    key_file  = "${A3S_DEMO_CERT_DIR}/localhost-key.pem"
  }
}

# A TCP entrypoint: its connections go to the tcp_routers below, never to the HTTP routers.
# It has no tls block, so the gateway decrypts nothing here: TLS clients are relayed as they are,
# routed by the server name (SNI) of their ClientHello.
entrypoints "tcp" {
  address  = "127.0.0.1:${A3S_DEMO_TCP_PORT:-9000}"
  protocol = "tcp"
}

# HTTP routers without an entrypoints list serve on both HTTP entrypoints (web, websecure).

# /api/... goes to the two echo backends in turn.
routers "api" {
  rule    = "PathPrefix(`/api`)"
  service = "api"
}

# Server-sent events from the streaming backend.
routers "events" {
  rule    = "PathPrefix(`/events`)"
  service = "stream"
}

# gRPC calls to the service demo.Echo (/demo.Echo/<Method>) go to the demo's gRPC backend. When
# it does not run (grpcio is not installed: pip install 'a3s-gateway[demo]'), A3S_DEMO_GRPC is a
# port the demo holds bound but not listening, so the gateway's connection is refused and calls
# get UNAVAILABLE rather than reaching the HTTP echo backends through the fallback router.
routers "grpc" {
  rule    = "PathPrefix(`/demo.Echo/`)"
  service = "grpc"
}

# WebSockets: /ws goes to the streaming backend's WebSocket echo (it answers at any path ending
# in /ws). The handshake is routed like any request; after the 101 the gateway relays the
# session's bytes both ways (docs/websocket-sse.md). Over HTTP/1.1 only: HTTP/2 clients open
# their WebSockets on a separate HTTP/1.1 connection.
routers "ws" {
  rule    = "PathPrefix(`/ws`)"
  service = "ws"
}

# The multiplexer: the gateway itself answers the WebSocket at /mux and carries named channels
# over it, spoken to in JSON (docs/websocket-sse.md#multiplexing-websocket_mux).
routers "mux" {
  rule    = "PathPrefix(`/mux`)"
  service = "mux"
}

# Everything else: the echo backends too, below every other router.
routers "fallback" {
  rule     = "PathPrefix(`/`)"
  service  = "api"
  priority = 1
}

services "api" {
  load_balancer {
    strategy = "round-robin"
    servers = [
      { url = "http://127.0.0.1:${A3S_DEMO_ECHO_A}" },
      { url = "http://127.0.0.1:${A3S_DEMO_ECHO_B}" },
    ]
  }
}

services "stream" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:${A3S_DEMO_STREAM}" }]
  }
}

# The same backend as "stream", written ws:// because it is the WebSocket echo it serves (ws://
# is http:// under another name: the scheme only says what the backend speaks).
services "ws" {
  load_balancer {
    servers = [{ url = "ws://127.0.0.1:${A3S_DEMO_STREAM}" }]
  }
}

# No load_balancer: the gateway terminates these WebSockets itself. A client subscribes to
# channels by name ({"type":"subscribe","channel":"chat","id":1}) and publishes to them.
#   echo: a service channel; each subscriber gets its own WebSocket to the ws service at /ws,
#         so what it publishes comes back to it as messages of channel "echo".
#   chat: a broadcast channel kept in the gateway, no backend; a message goes to every
#         subscriber, the publisher included (echo = true).
services "mux" {
  websocket_mux {
    channels "echo" {
      service = "ws"
      path    = "/ws"
    }
    channels "chat" {
      broadcast = true
      echo      = true
    }
  }
}

# h2c: HTTP/2 by prior knowledge to the backend, as gRPC needs.
services "grpc" {
  load_balancer {
    servers = [{ url = "h2c://127.0.0.1:${A3S_DEMO_GRPC}" }]
  }
}

# TCP: every connection on entrypoint tcp goes to the TCP echo, byte for byte, half-close
# included (send, shut down writing, read all of it back, then the end):
#   printf 'hello\n' | nc -N 127.0.0.1 9000
# HostSNI(`*`) also takes connections that are not TLS at all; its default priority (-1) puts
# it below every other tcp router.
tcp_routers "tcp-echo" {
  rule        = "HostSNI(`*`)"
  service     = "tcp-echo"
  entrypoints = ["tcp"]
}

# TLS passthrough: a TLS client naming echo.localhost goes to the TLS echo, which holds its own
# certificate for echo.localhost (signed by the demo's CA): the gateway relays the encrypted
# bytes unopened (an entrypoint without tls needs no tls_passthrough flag; on one with tls it
# would take tls_passthrough = true) and the backend terminates TLS.
#   openssl s_client -connect 127.0.0.1:9000 -servername echo.localhost -CAfile <dir>/ca.pem -brief
tcp_routers "tls-echo" {
  rule        = "HostSNI(`echo.localhost`)"
  service     = "tls-echo"
  entrypoints = ["tcp"]
}

services "tcp-echo" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:${A3S_DEMO_TCP_ECHO}" }]
  }
}

# tcp://, not tls://: the gateway connects in plain TCP and relays the client's TLS through it.
services "tls-echo" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:${A3S_DEMO_TLS_ECHO}" }]
  }
}

# The management API (docs/operations.md), loopback only. Its token variable is the demo's own,
# so an A3S_GATEWAY_ADMIN_TOKEN set in your shell does not put the banner's curl commands
# behind a token; while that variable is unset, no token is asked for.
management {
  address        = "127.0.0.1:${A3S_DEMO_ADMIN_PORT:-9901}"
  auth_token_env = "A3S_DEMO_ADMIN_TOKEN"
}

# A short drain: Ctrl-C stops the demo within a few seconds even with an SSE stream open.
shutdown_timeout_secs = 3
