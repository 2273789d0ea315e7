# examples/gateway.hcl: a runnable tour of the a3s_gateway configuration.
#
#   ./dev validate examples/gateway.hcl      # check it and print the summary
#   ./dev run examples/gateway.hcl           # start the gateway with it
#
# Every block and field is described in docs/configuration.md; services in docs/services.md,
# middlewares in docs/middlewares.md, the management API and observability in
# docs/operations.md. Strings may use ${NAME} and ${NAME:-default} for environment variables;
# write $${ for a literal "${".
#
# Only what works today is here. Every http entrypoint also speaks HTTP/2 (h2c by prior
# knowledge here; h2 by ALPN on a TLS entrypoint: docs/http2-grpc.md). ACME, WebSocket proxying,
# TCP/UDP entrypoints and routers, autoscaling, revisions, rollouts and the DNS, discovery and
# Kubernetes providers are part of the configuration language but not available yet: `validate`
# refuses them by name (see "Not available yet" in docs/configuration.md).

# --- Entrypoints: where the gateway listens -------------------------------------------------
entrypoints "web" {
  address = "127.0.0.1:8080"          # IPv4:port, [IPv6]:port or :port (all interfaces)

  max_connections = 10000             # refused at accept beyond this
  tcp_allowed_ips = ["127.0.0.0/8", "::1"]

  timeouts {
    request_head = "30s"               # durations: <number><ms|s|m|h>
    idle         = "60s"
  }

  limits {
    max_header_bytes = 32768
    max_headers      = 100
  }

  forwarded_headers {
    trusted_ips = ["127.0.0.1"]        # peers whose X-Forwarded-* headers are kept
  }
}

# --- Routers: Traefik-style rules pick a service ----------------------------------------------
routers "api" {
  rule        = "Host(`localhost`) && PathPrefix(`/api`)"
  service     = "api"
  middlewares = ["cors", "auth", "limit", "strip-api"]
}

routers "static" {
  rule     = "PathPrefix(`/`)"
  service  = "static"
  priority = 1                         # 0 (default) means "the rule's length"
}

# --- Services: backend pools ------------------------------------------------------------------
services "api" {
  load_balancer {
    strategy = "least-connections"     # also round-robin, weighted, random, p2c, consistent-hash
    servers = [
      { url = "http://127.0.0.1:8001" },
      { url = "http://127.0.0.1:8002", weight = 2 },
    ]

    health_check {                     # active probes, each backend on its own schedule
      path     = "/health"
      interval = "10s"
      timeout  = "2s"
    }

    passive_health {                   # outlier ejection from real traffic (on by default)
      error_threshold = 5
      window          = "30s"
    }

    sticky {                           # a signed cookie keeps a client on its backend
      cookie = "api_backend"
      secret = "${STICKY_SECRET:-dev-only-sticky-secret-0123456789}"
    }

    connect_timeout         = "5s"
    response_header_timeout = "30s"
  }

  mirror {                             # copy 10 % of requests to a shadow pool, answers dropped
    service    = "shadow"
    percentage = 10
  }

  failover {                           # used when no backend of "api" is available
    service = "static"
  }
}

services "static" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8003" }]
  }
}

services "shadow" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8004" }]
  }
}

# --- Middlewares: one block each, `type` picks the behaviour -----------------------------------
middlewares "cors" {
  type            = "cors"
  allowed_origins = ["http://localhost:3000"]
}

middlewares "auth" {
  type  = "jwt"
  value = "${JWT_SECRET:-dev-only-jwt-secret-change-me-0123456789}"
}

middlewares "limit" {
  type  = "rate-limit"
  rate  = 100                          # tokens per second
  burst = 50
}

middlewares "strip-api" {
  type     = "strip-prefix"
  prefixes = ["/api"]
}

# --- Management API, observability, providers --------------------------------------------------
management {
  address = "127.0.0.1:9901"           # /api/gateway/health, /metrics, /config, ...
}

observability {
  access_log_path     = ""             # "" = stdout
  tracing_propagation = ["w3c"]
}

providers {
  file {
    watch = true                       # reload when this file changes
  }
}

shutdown_timeout_secs = 30
