"""Certificate problems through the real CLI (issue #17 item 6, SPEC §3.1 step 6): ``validate``
and ``run`` name the file and the field, and exit 1 without binding anything."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING

import pytest
import trustme

from tests.support.certs import encrypted_key, issue, write_pair
from tests.support.cli import run_cli

if TYPE_CHECKING:
    from pathlib import Path

YEAR = datetime.timedelta(days=365)


def broken_config(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A config whose management certificate has expired, whose client CA is a leaf and whose
    upstream client certificate is for servers only, plus an entrypoint with an encrypted key."""
    ca = trustme.CA()
    now = datetime.datetime.now(datetime.UTC)
    old = ca.issue_cert("old.test", not_before=now - 2 * YEAR, not_after=now - YEAR)
    files = {"old": tmp_path / "old.pem", "old_key": tmp_path / "old-key.pem"}
    old.cert_chain_pems[0].write_to_path(str(files["old"]))
    old.private_key_pem.write_to_path(str(files["old_key"]))
    locked = ca.issue_cert("locked.test")
    files["locked"], files["locked_key"] = tmp_path / "locked.pem", tmp_path / "locked-key.pem"
    locked.cert_chain_pems[0].write_to_path(str(files["locked"]))
    files["locked_key"].write_bytes(encrypted_key(locked))
    files["server"], files["server_key"] = write_pair(
        tmp_path, "server", issue(ca, "server.test", usages=("serverAuth",))
    )
    config = tmp_path / "gateway.hcl"
    config.write_text(
        f"""entrypoints "web" {{
  address = "127.0.0.1:0"
}}
entrypoints "websecure" {{
  address = "127.0.0.1:0"
  tls {{
    cert_file = "{files["locked"]}"
    key_file  = "{files["locked_key"]}"
  }}
}}
routers "api" {{
  rule    = "PathPrefix(`/`)"
  service = "backend"
}}
services "backend" {{
  load_balancer {{
    servers = [{{ url = "https://127.0.0.1:9" }}]
    upstream_tls {{
      cert_file = "{files["server"]}"
      key_file  = "{files["server_key"]}"
    }}
  }}
}}
management {{
  address = "127.0.0.1:0"
  tls {{
    cert_file      = "{files["old"]}"
    key_file       = "{files["old_key"]}"
    client_auth    = "require"
    client_ca_file = "{files["server"]}"
  }}
}}
"""
    )
    return config, files


@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_cli_names_each_bad_file_and_field(command: str, tmp_path: Path) -> None:
    config, files = broken_config(tmp_path)
    done = run_cli(command, str(config))
    assert done.code == 1, done.stderr
    lines = done.stderr.splitlines()

    def line_for(field: str) -> str:
        [found] = [line for line in lines if f": error: {field}: " in line]
        assert found.startswith(f"{config}:")
        return found

    assert (
        f'the key in "{files["locked_key"]}" is encrypted; a passphrase-protected key is not '
        "supported"
    ) in line_for('entrypoints["websecure"].tls.key_file')
    assert f'certificate "{files["old"]}" has expired' in line_for("management.tls.cert_file")
    assert f'CA file "{files["server"]}" holds a certificate that is not a CA' in line_for(
        "management.tls.client_ca_file"
    )
    assert "is not for TLS clients" in line_for(
        'services["backend"].load_balancer.upstream_tls.cert_file'
    )
    assert "listening" not in done.stderr  # nothing was bound
