# Service discovery on one machine: `python -m a3s_gateway run examples/discovery.hcl`, with
# two instances of a self-describing demo service started beside it:
#
#   python -m a3s_gateway.demo.replica --port 9201 --name users --version 1.0.0 \
#       --route 'PathPrefix(`/users`)' &
#   python -m a3s_gateway.demo.replica --port 9202 --name users --version 1.1.0 \
#       --route 'PathPrefix(`/users`)' --route 'PathPrefix(`/v2/users`)' &
#
# Each describes itself at /.well-known/a3s-service.json; within a few seconds the gateway routes
# /users to both and /v2/users (the newer version's route) too. Stop one and it leaves the
# service after three failed polls; stop both and the routes go. Try:
#
#   curl -s http://127.0.0.1:8080/users/hello
#   curl -s http://127.0.0.1:8080/v2/users/hello
#   curl -s http://127.0.0.1:9901/api/gateway/providers

entrypoints "web" {
  address = "127.0.0.1:8080"
}

management {
  address = "127.0.0.1:9901"
}

providers {
  file {
    debounce = "200ms"
  }
  discovery {
    seeds = [
      { url = "http://127.0.0.1:9201" },
      { url = "http://127.0.0.1:9202" },
    ]
    poll_interval_secs    = 1
    timeout_secs          = 1
    remove_after_failures = 3
  }
}
