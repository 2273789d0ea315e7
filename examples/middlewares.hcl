# examples/middlewares.hcl: a realistic middleware chain in front of two local backends.
#
#   ./dev validate examples/middlewares.hcl
#   ./dev run examples/middlewares.hcl
#
# Backends: an API on http://127.0.0.1:9001 and an admin app on http://127.0.0.1:9002 (any
# HTTP server will do, e.g. `python3 -m http.server 9001`). Every middleware type is described
# in docs/middlewares.md; field tables are in docs/configuration.md.
#
# Secrets come from the environment. The defaults after ":-" are for local trials only: set
# API_KEY and ADMIN_PASSWORD for anything else.
#
# Try it:
#   curl -i http://127.0.0.1:8080/api/items                                  # 401
#   curl -i -H 'X-API-Key: dev-only-api-key-change-me' \
#        --compressed http://127.0.0.1:8080/api/items                        # proxied as /items
#   curl -i -X OPTIONS -H 'Origin: http://localhost:3000' \
#        -H 'Access-Control-Request-Method: PATCH' http://127.0.0.1:8080/api/items   # 204
#   curl -i -u admin:dev-only-admin-password http://127.0.0.1:8080/admin/    # basic-auth

entrypoints "web" {
  address = "127.0.0.1:8080"

  # Behind a load balancer, list its addresses here so that the client IP used by ip-allow
  # and rate-limit is the real client's, not the load balancer's:
  # forwarded_headers {
  #   trusted_ips = ["10.0.0.10", "10.0.0.11"]
  # }
}

# --- Routers ----------------------------------------------------------------------------------

# The API: the recommended order (docs/middlewares.md). cors first, so that preflights are answered
# before authentication and every rejection below still carries CORS fields; retry last but
# for compress, so that it repeats as little as possible; compress acts on the final response
# wherever it is listed.
routers "api" {
  rule    = "PathPrefix(`/api/`)"
  service = "api"
  middlewares = [
    "cors",
    "internal-networks",
    "api-key",
    "per-client-limit",
    "json-body-limit",
    "api-headers",
    "strip-api",
    "api-breaker",
    "api-retry",
    "compress",
  ]
}

# The admin app: a shorter chain. It shares "internal-networks" and "compress" with the API
# (one instance per definition), but has its own login and its own, stricter rate limit.
routers "admin" {
  rule    = "PathPrefix(`/admin/`)"
  service = "admin"
  middlewares = [
    "internal-networks",
    "admin-login",
    "admin-limit",
    "strip-admin",
    "compress",
  ]
}

# --- Services ---------------------------------------------------------------------------------

services "api" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9001" }]
    # A retry on "timeout" waits this long per attempt: keep it short for an API.
    response_header_timeout = "5s"
  }
}

services "admin" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9002" }]
  }
}

# --- Middlewares ------------------------------------------------------------------------------

# Browsers on the dev server may call the API. PATCH and X-API-Key are not in the defaults.
middlewares "cors" {
  type            = "cors"
  allowed_origins = ["http://localhost:3000", "https://*.example.com"]
  allowed_methods = ["GET", "POST", "PATCH", "DELETE"]
  allowed_headers = ["Content-Type", "X-API-Key"]
  expose_headers  = ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]
  max_age         = 600
}

# Loopback and private networks only (the client IP; see forwarded_headers above).
middlewares "internal-networks" {
  type        = "ip-allow"
  allowed_ips = ["127.0.0.0/8", "::1", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
}

# A second key can be added while rotating: both are accepted until the old one is removed.
middlewares "api-key" {
  type = "api-key"
  keys = ["${API_KEY:-dev-only-api-key-change-me}"]
}

middlewares "admin-login" {
  type          = "basic-auth"
  username      = "admin"
  password      = "${ADMIN_PASSWORD:-dev-only-admin-password}"
  realm         = "admin"
  remove_header = true
}

# 20 requests per second per client IP, bursts of up to 40. Per worker: with --workers N the
# effective limit is N times this (use rate-limit-redis for one shared limit).
middlewares "per-client-limit" {
  type  = "rate-limit"
  rate  = 20
  burst = 40
}

middlewares "admin-limit" {
  type = "rate-limit"
  rate = 2
}

middlewares "json-body-limit" {
  type           = "body-limit"
  max_body_bytes = 1048576
}

# The backend does not need the key; responses get a few security headers.
middlewares "api-headers" {
  type = "headers"
  request_headers = {
    "X-API-Key" = ""
  }
  response_headers = {
    "X-Content-Type-Options" = "nosniff"
    "Cache-Control"          = "no-store"
  }
}

middlewares "strip-api" {
  type     = "strip-prefix"
  prefixes = ["/api"]
}

middlewares "strip-admin" {
  type     = "strip-prefix"
  prefixes = ["/admin"]
}

# Listed before retry: it judges each client request once, by its outcome after the retries.
middlewares "api-breaker" {
  type              = "circuit-breaker"
  failure_threshold = 5
  cooldown_secs     = 10
}

# Idempotent requests only (the default), before any response byte reached the client.
middlewares "api-retry" {
  type              = "retry"
  max_retries       = 2
  retry_interval_ms = 50
}

middlewares "compress" {
  type = "compress"
}
