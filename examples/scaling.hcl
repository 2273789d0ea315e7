# Scale from zero on one machine: `python -m a3s_gateway run examples/scaling.hcl`.
#
# The `local` executor runs the demo's echo service as child processes on ports 9101-9104;
# none runs until the first request, which waits in the buffer (about a second) and is then
# served. Under load the autoscaler adds replicas; 36 s after the last request (a 30 s stable
# window of zero concurrency, then a 6 s grace) it stops them all again. Try:
#
#   curl -i http://127.0.0.1:8080/hello
#   wrk -t2 -c40 -d20s http://127.0.0.1:8080/delay/100
#   curl -s http://127.0.0.1:9901/api/gateway/scaling

entrypoints "web" {
  address = "127.0.0.1:8080"
}

routers "app" {
  rule    = "PathPrefix(`/`)"
  service = "app"
}

services "app" {
  load_balancer {
    strategy = "least-connections"
    # The readiness signal of a new replica: it gets traffic after its first good probe.
    health_check {
      path     = "/status/200"
      interval = "1s"
      timeout  = "1s"
    }
  }
  scaling {
    executor              = "local"
    min_replicas          = 0
    max_replicas          = 4
    container_concurrency = 10  # each replica takes at most 10 requests at once
    target_utilization    = 0.7 # and the autoscaler aims at 7
    buffer_enabled        = true
    buffer_timeout_secs   = 30
    stable_window         = "30s"
    scale_down_delay_secs = 0
    scale_to_zero_grace   = "6s"
    tick_interval         = "1s"
    local {
      command      = ["{python}", "-m", "a3s_gateway.demo.replica", "--name", "app", "--port", "{port}"]
      base_port    = 9101
      stop_timeout = "5s"
    }
  }
}

management {
  address = "127.0.0.1:9901"
}
