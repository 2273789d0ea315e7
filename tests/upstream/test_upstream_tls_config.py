"""``upstream_tls`` from config to the runtime (SPEC §3.10): the compiled peers and health-check
settings carry the service's TLS identity, and applying a config that turns verification off
hands one warning per such service to the shell."""

from __future__ import annotations

from a3s_gateway.config.load import load_config_text
from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.upstream.peer import Peer, TlsIdentity, UpstreamTlsSettings

CONFIG = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "main" {
  rule    = "PathPrefix(`/`)"
  service = "secure"
}
services "secure" {
  load_balancer {
    servers = [{ url = "https://10.0.0.7:8443" }, { url = "https://api.test" }]
    upstream_tls {
      ca_file     = "/etc/gateway/ca.pem"
      server_name = "api.internal"
      cert_file   = "/etc/gateway/client.pem"
      key_file    = "/etc/gateway/client-key.pem"
    }
    health_check {
      path = "/health"
    }
  }
}
services "plain" {
  load_balancer {
    servers = [{ url = "https://10.0.0.8" }]
  }
}
services "lab" {
  load_balancer {
    servers = [{ url = "https://10.0.0.9" }]
    upstream_tls {
      insecure_skip_verify = true
    }
  }
}
"""

IDENTITY = TlsIdentity(
    ca_file="/etc/gateway/ca.pem",
    cert_file="/etc/gateway/client.pem",
    key_file="/etc/gateway/client-key.pem",
)


def test_peers_and_probes_carry_the_tls_identity() -> None:
    runtime = compile_runtime(load_config_text(CONFIG, filename="t.hcl"), 1)
    secure = runtime.services["secure"]
    assert secure.peers == (
        Peer("https", "10.0.0.7", 8443, tls=True, server_name="api.internal", identity=IDENTITY),
        Peer("https", "api.test", 443, tls=True, server_name="api.internal", identity=IDENTITY),
    )
    assert secure.health_check is not None
    assert secure.health_check.tls == UpstreamTlsSettings(
        server_name="api.internal", identity=IDENTITY
    )
    assert runtime.services["plain"].peers == (
        Peer("https", "10.0.0.8", 443, tls=True, server_name="10.0.0.8"),
    )
    assert runtime.services["lab"].peers[0].identity == TlsIdentity(verify=False)


def test_insecure_skip_verify_is_warned_about_once_per_service_when_applied() -> None:
    warnings: list[tuple[str, str]] = []
    deps = MiddlewareDeps(warn=lambda topic, message: warnings.append((topic, message)))
    compile_runtime(load_config_text(CONFIG, filename="t.hcl"), 1, deps=deps)
    assert warnings == [
        (
            "upstream",
            'service "lab": upstream_tls.insecure_skip_verify = true: backend certificates and '
            "names are not verified",
        )
    ]
