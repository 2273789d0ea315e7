"""The README's promises, checked against the running demo.

Every ``curl`` line in the README's shell blocks is run as written (only the demo's ports are
swapped for the free ones this test got) with the real curl, and must answer the way the README
says; a new ``curl`` line without an expectation here fails the test, so the README cannot grow
an example nobody checked. Every management path the README's feature table names answers under
the management API's prefix.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from a3s_gateway.demo import RunningDemo, run_demo

README = Path(__file__).parents[2] / "README.md"
GATEWAY = "http://127.0.0.1:8080"
MANAGEMENT = "http://127.0.0.1:9901/api/gateway"
#: The demo's HTTPS URL and the CA path as the README writes them (the banner prints the real one).
TLS_GATEWAY = "https://localhost:8443"
CA_FILE = "/tmp/a3s-gateway-demo-XXXX/ca.pem"

pytestmark = pytest.mark.integration


def shell_lines(text: str) -> list[str]:
    """Lines of the ```bash blocks."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash" if not inside else False
            continue
        if inside:
            lines.append(line)
    return lines


def curl_lines() -> list[str]:
    return [
        line for line in shell_lines(README.read_text(encoding="utf-8")) if line.startswith("curl ")
    ]


def _status(output: str) -> int:
    found = re.match(r"HTTP/1\.1 (\d{3}) ", output)
    assert found is not None, output[:200]
    return int(found.group(1))


def _body_json(output: str) -> dict[str, object]:
    body = output.split("\r\n\r\n", 1)[1]
    document = json.loads(body)
    assert isinstance(document, dict)
    return document


def _hello(outputs: list[str]) -> None:
    # "run twice: echo-a, then echo-b" (a fresh demo; this is the first request it serves)
    assert [_status(o) for o in outputs] == [200, 200]
    assert [_body_json(o)["service"] for o in outputs] == ["echo-a", "echo-b"]


def _orders(outputs: list[str]) -> None:
    for output in outputs:
        assert _status(output) == 200
        document = _body_json(output)
        assert (document["method"], document["path"], document["body_bytes"]) == (
            "POST",
            "/api/orders",
            len("name=demo"),
        )


def _status_503(outputs: list[str]) -> None:
    assert all(_status(o) == 503 for o in outputs)


def _events(outputs: list[str]) -> None:
    for output in outputs:
        counts = re.findall(r'"count": (\d+)', output)
        assert counts == [str(n) for n in range(1, 11)], output  # one a second, ten in all


def _health(outputs: list[str]) -> None:
    for output in outputs:
        assert json.loads(output)["state"] == "running"


def _requests_total(outputs: list[str]) -> None:
    for output in outputs:
        lines = output.splitlines()
        assert lines, "no a3s_http_requests_total sample"
        assert all(line.startswith("a3s_http_requests_total{") for line in lines)
        assert any('router="api"' in line for line in lines)


def _https_hello(outputs: list[str]) -> None:
    for output in outputs:
        document = json.loads(output)
        assert document["service"] in {"echo-a", "echo-b"}
        headers = {name.lower(): value for name, value in document["headers"].items()}
        assert headers["x-forwarded-proto"] == "https"


#: What each README curl line must show, by a part of the line; runs is how often it runs.
EXPECTED: dict[str, tuple[int, Callable[[list[str]], None]]] = {
    f"{GATEWAY}/api/hello": (2, _hello),
    f"--data 'name=demo' {GATEWAY}/api/orders": (1, _orders),
    f"{GATEWAY}/api/status/503": (1, _status_503),
    f"-N {GATEWAY}/events": (1, _events),
    f"--cacert {CA_FILE} {TLS_GATEWAY}/api/hello": (1, _https_hello),
    f"{MANAGEMENT}/health": (1, _health),
    f"{MANAGEMENT}/metrics | grep ^a3s_http_requests_total": (1, _requests_total),
}


def _expectation(line: str) -> tuple[int, Callable[[list[str]], None]]:
    found = [value for key, value in EXPECTED.items() if key in line]
    assert len(found) == 1, f"README line without an expectation in this test: {line}"
    return found[0]


async def _run(line: str, running: RunningDemo) -> str:
    assert running.management is not None
    command = line.split("  #", 1)[0].strip()
    command = command.replace(MANAGEMENT, running.management).replace(GATEWAY, running.url)
    if running.tls_url is not None and running.ca_file is not None:
        command = command.replace(CA_FILE, str(running.ca_file))
        command = command.replace(TLS_GATEWAY, running.tls_url)
    assert "127.0.0.1:8080" not in command, command
    assert ":8443" not in command, command
    assert "9901" not in command, command
    done = await trio.run_process(
        ["bash", "-c", f"set -o pipefail; {command}"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert done.returncode == 0, (command, done.stderr.decode(errors="replace"))
    return done.stdout.decode()


def test_every_curl_line_has_an_expectation() -> None:
    lines = curl_lines()
    assert len(lines) >= len(EXPECTED)
    for line in lines:
        _expectation(line)
    for key in EXPECTED:
        assert any(key in line for line in lines), f"no README line for {key}"


async def test_every_curl_line_answers_as_shown(nursery: trio.Nursery) -> None:
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=io.StringIO()))
    try:
        with trio.fail_after(60):
            for line in curl_lines():
                runs, check = _expectation(line)
                check([await _run(line, running) for _ in range(runs)])
    finally:
        await running.gateway.shutdown()


def _table_row(prefix: str) -> str:
    rows = [
        line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith(prefix)
    ]
    assert len(rows) == 1, prefix
    return rows[0]


async def test_the_management_paths_the_readme_names_answer(nursery: trio.Nursery) -> None:
    row = _table_row("| Operations")
    paths = re.findall(r"`(/[a-z]+)`", row)
    assert {"/health", "/live", "/ready", "/metrics", "/config"} <= set(paths)
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=io.StringIO()))
    assert running.management is not None
    try:
        with trio.fail_after(30):
            for path in paths:
                url = f"{running.management}{path}"
                status = ["-o", "/dev/null", "-w", "%{http_code}"]
                done = await trio.run_process(
                    ["curl", "-sS", "--max-time", "10", *status, url],
                    capture_stdout=True,
                    check=False,
                )
                assert done.stdout == b"200", (path, done.stdout)
    finally:
        await running.gateway.shutdown()
