"""The demo serves HTTPS (issue #17 item 7): the certificate it makes at start, a real HTTPS
request trusting only the printed CA file, and the temporary files gone once it stops, in
process and through the ``demo`` command."""

from __future__ import annotations

import datetime
import io
import json
import re
import signal
import ssl
import stat
import subprocess
import sys
from functools import partial
from pathlib import Path

import trio
from cryptography import x509

from a3s_gateway.demo import BackendPorts, RunningDemo, run_demo
from a3s_gateway.demo.certs import write_demo_certificates
from a3s_gateway.demo.run import banner
from a3s_gateway.preflight import ca_findings, certificate_findings
from tests.demo.client import BANNER_END, curl, read_until
from tests.support.cli import ROOT, cli_env

#: The banner's HTTPS example: the CA file and the URL.
HTTPS_EXAMPLE = re.compile(r"curl --cacert (\S+/ca\.pem) (https://localhost:\d+)/api/hello\n")


def test_the_certificates_are_valid_for_localhost(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    made = write_demo_certificates(tmp_path, now)
    leaf = x509.load_pem_x509_certificate(made.cert_file.read_bytes())
    ca = x509.load_pem_x509_certificate(made.ca_file.read_bytes())
    assert certificate_findings(str(made.cert_file), leaf, purpose="server", now=now) == []
    assert ca_findings(str(made.ca_file), [ca], clients=True, now=now) == []
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert stat.S_IMODE(made.key_file.stat().st_mode) == 0o600
    # A client trusting only the CA accepts the pair (the handshake itself is tested below).
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(made.cert_file, made.key_file)
    client = ssl.create_default_context(cafile=str(made.ca_file))
    assert client.verify_mode == ssl.CERT_REQUIRED


def test_the_banner_shows_the_https_example() -> None:
    ports = BackendPorts(9101, 9102, 9103, 9104, 9105, 9106)
    text = banner(
        "http://127.0.0.1:8080",
        ports,
        listening=True,
        tls="https://localhost:8443",
        ca_file=Path("/tmp/a3s-gateway-demo-x/ca.pem"),
    )
    assert "  gateway   https://localhost:8443   (entrypoint websecure, HTTPS)" in text
    assert (
        "  curl --cacert /tmp/a3s-gateway-demo-x/ca.pem https://localhost:8443/api/hello\n" in text
    )
    assert "--cacert" not in banner("http://127.0.0.1:8080", ports, listening=True)


async def test_an_https_request_with_the_printed_ca_succeeds_and_the_files_go() -> None:
    out = io.StringIO()
    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            running: RunningDemo = await nursery.start(partial(run_demo, 0, out=out))
            try:
                found = HTTPS_EXAMPLE.search(out.getvalue())
                assert found is not None, out.getvalue()
                ca_file, url = Path(found.group(1)), found.group(2)
                assert (running.ca_file, running.tls_url) == (ca_file, url)
                assert await trio.Path(ca_file).is_file()
                document = json.loads(await curl("--cacert", str(ca_file), f"{url}/api/hello"))
                assert document["service"] in {"echo-a", "echo-b"}
                headers = {name.lower(): value for name, value in document["headers"].items()}
                assert headers["x-forwarded-proto"] == "https"
                # Without the CA the certificate is refused.
                refused = await trio.run_process(
                    ["curl", "-sS", "--max-time", "20", f"{url}/api/hello"],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert refused.returncode == 60  # peer certificate cannot be authenticated
            finally:
                await running.gateway.shutdown()
    assert not await trio.Path(ca_file.parent).exists()


async def test_the_demo_command_serves_https_and_removes_its_files(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "a3s_gateway", "demo", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=cli_env(),
            cwd=ROOT,
        )
    try:
        printed = await read_until(process, BANNER_END.encode())
        found = HTTPS_EXAMPLE.search(printed)
        assert found is not None, printed
        ca_file = Path(found.group(1))
        document = json.loads(await curl("--cacert", str(ca_file), f"{found.group(2)}/api/x"))
        assert document["path"] == "/api/x"
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 0, (tmp_path / "stderr").read_text()
        assert not await trio.Path(ca_file.parent).exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
