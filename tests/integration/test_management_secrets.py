"""Interpolated values never shown (SPEC §14.4, issue #14 item 4), through the real CLI:
``python -m a3s_gateway run`` with a management API, queried with curl.

Checked: ``GET /config`` hides every interpolated value (whatever its variable is called,
``BACKEND_PASS`` included) but shows a variable listed in ``public_env`` and a file path built
from a variable; after the file is rewritten with a ``forward_auth_url`` that a secret makes
invalid (and a JWT key file that is missing), ``POST /reload`` answers 422 with the problem
quoting the URL with the secret redacted but the public variable and the file path as they
are, and neither that reply nor anything on stderr (the ``reload rejected`` line
included) holds the secret; the old config keeps serving. Every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
import signal
from typing import TYPE_CHECKING, Final

import pytest
import trio

from tests.support.cli import cli_env, start_gateway
from tests.support.gateway import LOCAL, curl, free_port

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
STEP_WAIT: Final = 20.0
ADMIN_TOKEN: Final = "secrets-test-admin-token-0123456789"
ENV: Final = {
    "SECRETS_TEST_ADMIN": ADMIN_TOKEN,
    "GW_HOST": LOCAL,
    "BACKEND_PASS": "hunter2-backend-pass",
    "AUTH_TOKEN": "tok-s3cr3t#zq9",
    "TENANT": "tenant-4e5f6a",
}
SECRETS: Final = ("hunter2-backend-pass", "tok-s3cr3t", "zq9", "tenant-4e5f6a")


@pytest.fixture(autouse=True)
def need_curl() -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is needed to query the management API")


def config_text(port: int, admin: int, log_dir: Path, *, broken: bool = False) -> str:
    auth = (
        'middlewares "auth" {\n  type = "forward-auth"\n'
        '  forward_auth_url = "https://${GW_HOST}/${AUTH_TOKEN}/check"\n}\n'
        'middlewares "jwt" {\n  type = "jwt"\n  algorithms = ["RS256"]\n'
        '  public_key_file = "${LOG_DIR}/missing.pem"\n}\n'
        if broken
        else ""
    )
    return f"""
public_env = ["GW_HOST"]
entrypoints "web" {{
  address = "${{GW_HOST}}:{port}"
}}
routers "main" {{
  rule        = "PathPrefix(`/`)"
  service     = "main"
  middlewares = ["hdr"]
}}
services "main" {{
  load_balancer {{
    servers = [{{ url = "http://{LOCAL}:{free_port()}/${{TENANT}}" }}]
  }}
}}
middlewares "hdr" {{
  type            = "headers"
  request_headers = {{ "X-Upstream-Auth" = "${{BACKEND_PASS}}" }}
}}
{auth}management {{
  address        = "{LOCAL}:{admin}"
  auth_token_env = "SECRETS_TEST_ADMIN"
}}
observability {{
  access_log_path = "${{LOG_DIR}}/access.log"
}}
providers {{
  file {{
    watch = false
  }}
}}
"""


async def test_config_and_a_rejected_reload_never_show_an_interpolated_value(
    tmp_path: Path,
) -> None:
    port, admin = free_port(), free_port()
    config = tmp_path / "gateway.hcl"
    config.write_text(config_text(port, admin, tmp_path), encoding="utf-8")
    env = cli_env({**ENV, "LOG_DIR": str(tmp_path)})
    api = f"http://{LOCAL}:{admin}/api/gateway"
    bearer = f"authorization: Bearer {ADMIN_TOKEN}"
    gateway = await start_gateway(str(config), env=env)
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        with trio.fail_after(STEP_WAIT):
            dump = await curl(f"{api}/config", "-H", bearer)
        config.write_text(config_text(port, admin, tmp_path, broken=True), encoding="utf-8")
        with trio.fail_after(STEP_WAIT):
            reply = await curl("-X", "POST", f"{api}/reload", "-H", bearer)
            rejected = await gateway.wait_for_line("reload rejected")
            after = await curl(f"{api}/config", "-H", bearer)
    finally:
        if gateway.process.returncode is None:
            gateway.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STEP_WAIT):
                await gateway.process.wait()
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
        assert gateway.process.stderr is not None
        with trio.move_on_after(STEP_WAIT):
            while chunk := await gateway.process.stderr.receive_some(65536):
                gateway.lines.append(chunk.decode(errors="replace"))
    stderr = "\n".join([*gateway.lines, rejected])
    print(stderr)  # shown when an assertion below fails

    assert dump.response.status == 200, dump
    document = json.loads(dump.response.body)
    assert document["entrypoints"]["web"]["address"] == f"{LOCAL}:{port}"  # public_env
    assert document["observability"]["access_log_path"] == f"{tmp_path}/access.log"
    assert document["middlewares"]["hdr"]["request_headers"]["X-Upstream-Auth"] == "<redacted>"
    assert document["services"]["main"]["load_balancer"]["servers"][0]["url"].endswith(
        "/<redacted>"
    )

    assert reply.response.status == 422, reply
    problems = json.loads(reply.response.body)["problems"]
    shown = {problem["path"]: problem["message"] for problem in problems}
    # GW_HOST is listed in public_env; a file path stays readable.
    expected = f'url "https://{LOCAL}/<redacted>/check" is invalid: a fragment is not allowed'
    assert shown == {
        'middlewares["auth"].forward_auth_url': expected,
        'middlewares["jwt"].public_key_file': f'file "{tmp_path}/missing.pem" not found',
    }
    assert expected in stderr

    assert after.response.status == 200
    assert "auth" not in json.loads(after.response.body)["middlewares"]  # the old one serves
    for secret in SECRETS:
        for body in (dump.response.body, reply.response.body, after.response.body):
            assert secret.encode() not in body
        assert secret not in stderr
