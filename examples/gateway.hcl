# examples/gateway.hcl: a runnable tour of the a3s_gateway configuration.
#
#   ./dev validate examples/gateway.hcl      # check it and print the summary
#   ./dev run examples/gateway.hcl           # start the gateway with it
#
# Every block and field is described in docs/configuration.md (SPEC §3). Strings may use
# ${NAME} and ${NAME:-default} for environment variables; write $${ for a literal "${".

# --- Entrypoints: where the gateway listens -------------------------------------------------
entrypoints "web" {
  address = "127.0.0.1:8080"          # IPv4:port, [IPv6]:port or :port (all interfaces)

  timeouts {
    request_head = "30s"               # durations: <number><ms|s|m|h>
    idle         = "60s"
  }

  limits {
    max_header_bytes = 32768
    max_headers      = 100
  }
}

# A raw TCP entrypoint; tcp_routers pick a backend by SNI, ALPN or client IP.
entrypoints "postgres" {
  address         = "127.0.0.1:15432"
  protocol        = "tcp"
  max_connections = 100
  tcp_allowed_ips = ["127.0.0.0/8", "::1"]
}

# TLS termination (needs real files; see docs/configuration.md):
# entrypoints "websecure" {
#   address = ":8443"
#   tls {
#     cert_file = "/etc/gateway/tls/cert.pem"
#     key_file  = "/etc/gateway/tls/key.pem"
#   }
# }

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

tcp_routers "db" {
  rule        = "HostSNI(`*`)"
  service     = "db"
  middlewares = ["db-guard"]
}

# --- Services: backend pools ------------------------------------------------------------------
services "api" {
  load_balancer {
    strategy = "least-connections"
    servers = [
      { url = "http://127.0.0.1:8001" },
      { url = "http://127.0.0.1:8002", weight = 2 },
    ]

    health_check {
      path     = "/health"
      interval = "10s"
      timeout  = "2s"
    }

    passive_health {
      error_threshold = 5
      window          = "30s"
    }

    sticky {
      cookie = "api_backend"
      secret = "${STICKY_SECRET:-dev-only-sticky-secret-0123456789}"
    }
  }

  failover {
    service = "static"
  }
}

services "static" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8003" }]
  }
}

services "db" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:5432" }]
  }
}

# --- Middlewares: one block each, `type` picks the behaviour -----------------------------------
middlewares "cors" {
  type            = "cors"
  allowed_origins = ["http://localhost:3000"]
}

middlewares "auth" {
  type = "jwt"
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

middlewares "db-guard" {
  type            = "tcp-filter"
  max_connections = 50
}

# --- Management API, observability, providers --------------------------------------------------
management {
  address = "127.0.0.1:9901"
}

observability {
  access_log_path     = ""             # "" = stdout
  tracing_propagation = ["w3c"]
}

providers {
  file {
    watch = true
  }
}

shutdown_timeout_secs = 30
