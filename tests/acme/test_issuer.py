"""``acme/issuer.py`` against a real Pebble CA (SPEC §12.3, §12.6): DNS-01 through
challtestsrv, HTTP-01 served by a small local server on Pebble's HTTP port, a challenge the CA
rejects, a CA that is down, and ``badNonce`` retried exactly once.

Pebble validates at once (``PEBBLE_VA_NOSLEEP``), so the issuer's waits are shortened to 50 ms
(``quick_sleep``): its Retry-After handling is tested with a fake clock in
``test_issuer_polling.py``. Each order has a 20 s deadline; each test takes well under 10 s.
"""

from __future__ import annotations

import http.server
import logging
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509 import verification
from requests.adapters import HTTPAdapter

from a3s_gateway.acme.issuer import USER_AGENT, AcmeError, Issued, Issuer
from a3s_gateway.acme.keys import dns01_value, key_matches
from a3s_gateway.acme.storage import AcmeStorage, StoredAccount
from tests.support import pebble as pebble_support
from tests.support.pebble import Pebble, running_pebble
from tests.support.redis_server import free_port

if TYPE_CHECKING:
    from pathlib import Path

EMAIL = "ops@example.com"
ORDER_TIME = 20.0


def quick_sleep(seconds: float) -> None:
    """Pebble decides at once: poll it every 50 ms instead of the 2 s default."""
    time.sleep(min(seconds, 0.05))


@pytest.fixture
def pebble() -> Iterator[Pebble]:
    with running_pebble() as server:
        yield server


def make_issuer(pebble: Pebble, path: Path, **kwargs: Any) -> Issuer:
    return Issuer(
        AcmeStorage(str(path)),
        directory_url=pebble.directory_url,
        email=EMAIL,
        ca_file=pebble.ca_file,
        timeout=5.0,
        sleep=quick_sleep,
        **kwargs,
    )


def deadline() -> float:
    return time.monotonic() + ORDER_TIME


@dataclass
class DnsSolver:
    """DNS-01 through challtestsrv; ``wrong`` publishes a value the CA will not accept."""

    pebble: Pebble
    wrong: bool = False
    challenge_type: str = "dns-01"
    calls: list[tuple[str, str]] = field(default_factory=list)

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        value = dns01_value("not-the-key-authorization" if self.wrong else key_authorization)
        self.pebble.set_txt(f"_acme-challenge.{domain}", value)
        self.calls.append(("present", domain))

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        self.pebble.clear_txt(f"_acme-challenge.{domain}")
        self.calls.append(("cleanup", domain))


def leaf_of(issued: Issued) -> x509.Certificate:
    return x509.load_pem_x509_certificates(issued.chain_pem)[0]


def assert_chain_verifies(pebble: Pebble, issued: Issued, domain: str) -> None:
    """The chain (leaf + intermediates) verifies up to Pebble's root for ``domain``."""
    leaf, *intermediates = x509.load_pem_x509_certificates(issued.chain_pem)
    store = verification.Store(x509.load_pem_x509_certificates(pebble.roots_pem()))
    verifier = verification.PolicyBuilder().store(store).build_server_verifier(x509.DNSName(domain))
    chain = verifier.verify(leaf, intermediates)
    assert len(chain) >= 3  # leaf, intermediate, root
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [domain]
    assert key_matches(issued.chain_pem, issued.key_pem)


def test_dns01_issues_ec256_then_rsa2048_with_the_same_account(
    pebble: Pebble, tmp_path: Path
) -> None:
    issuer = make_issuer(pebble, tmp_path)
    solver = DnsSolver(pebble)
    started = time.monotonic()
    first = issuer.issue("a.test", "ec256", solver, deadline=deadline())
    assert time.monotonic() - started < 5
    assert_chain_verifies(pebble, first, "a.test")
    key = leaf_of(first).public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert solver.calls == [("present", "a.test"), ("cleanup", "a.test")]
    assert "PRIVATE KEY" not in repr(first)

    account = issuer.storage.account()
    assert account is not None
    assert account.directory == pebble.directory_url
    assert account.email == EMAIL
    assert account.account_url.startswith(pebble.directory_url.removesuffix("/dir"))
    assert (tmp_path / "account.json").is_file()
    assert (tmp_path / "account.key.pem").stat().st_mode & 0o777 == 0o600
    account_key = issuer.storage.account_key()

    second = issuer.issue("a.test", "rsa2048", solver, deadline=deadline())
    assert_chain_verifies(pebble, second, "a.test")
    key = leaf_of(second).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    assert key.key_size == 2048
    assert issuer.storage.account() == account  # the account was reused, not created again
    assert issuer.storage.account_key() == account_key


def test_a_stored_account_the_ca_does_not_know_is_found_again(
    pebble: Pebble, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "a3s_gateway.acme")
    issuer = make_issuer(pebble, tmp_path)
    issuer.issue("a.test", "ec256", DnsSolver(pebble), deadline=deadline())
    account = issuer.storage.account()
    assert account is not None
    stale = pebble.directory_url.replace("/dir", "/my-account/0000")
    issuer.storage.save_account(StoredAccount(pebble.directory_url, stale, EMAIL))

    issued = issuer.issue("b.test", "ec256", DnsSolver(pebble), deadline=deadline())

    assert_chain_verifies(pebble, issued, "b.test")
    assert issuer.storage.account() == account  # found by its key (onlyReturnExisting)
    assert "ACME account for b.test unknown to the CA: registering again" in caplog.text


class _Http01Handler(http.server.BaseHTTPRequestHandler):
    answers: dict[str, str]

    def do_GET(self) -> None:
        answer = self.answers.get(self.path.removeprefix("/.well-known/acme-challenge/"))
        body = (answer or "not found").encode()
        self.send_response(200 if answer is not None else 404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class HttpSolver:
    """HTTP-01: what ``present`` adds, the local server on Pebble's HTTP port serves."""

    answers: dict[str, str]
    challenge_type: str = "http-01"
    cleaned: list[str] = field(default_factory=list)

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        self.answers[token] = key_authorization

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        del self.answers[token]
        self.cleaned.append(token)


def test_http01_is_validated_on_the_http_port(pebble: Pebble, tmp_path: Path) -> None:
    answers: dict[str, str] = {}
    handler = type("Handler", (_Http01Handler,), {"answers": answers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http_port), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        solver = HttpSolver(answers)
        issued = make_issuer(pebble, tmp_path).issue(
            "web.test", "ec256", solver, deadline=deadline()
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert_chain_verifies(pebble, issued, "web.test")
    assert len(solver.cleaned) == 1
    assert answers == {}


def test_a_wrong_answer_is_rejected_and_cleaned_up(pebble: Pebble, tmp_path: Path) -> None:
    solver = DnsSolver(pebble, wrong=True)
    with pytest.raises(AcmeError) as caught:
        make_issuer(pebble, tmp_path).issue("a.test", "ec256", solver, deadline=deadline())
    assert caught.value.result == "rejected"
    message = str(caught.value)
    assert message.startswith("a.test: the CA rejected the dns-01 challenge")
    assert "urn:ietf:params:acme:error:unauthorized" in message
    assert solver.calls == [("present", "a.test"), ("cleanup", "a.test")]


def test_a_ca_that_is_down_is_a_ca_error_at_once(tmp_path: Path) -> None:
    issuer = Issuer(
        AcmeStorage(str(tmp_path)),
        directory_url=f"https://127.0.0.1:{free_port()}/dir",
        email=EMAIL,
        timeout=5.0,
    )
    solver = DnsSolver(pebble=None)  # type: ignore[arg-type]  # never reached
    started = time.monotonic()
    with pytest.raises(AcmeError) as caught:
        issuer.issue("a.test", "ec256", solver, deadline=deadline())
    assert time.monotonic() - started < 2
    assert caught.value.result == "ca_error"
    assert str(caught.value).startswith("a.test: the CA is unreachable")
    assert solver.calls == []


class CountingAdapter(HTTPAdapter):
    """Counts the POSTs (JWS requests) that reach the network and the ``badNonce`` answers;
    checks the user agent and the timeout of every request."""

    def __init__(self) -> None:
        super().__init__()
        self.posts: list[str] = []
        self.bad_nonces = 0

    def send(
        self, request: requests.PreparedRequest, *args: Any, **kwargs: Any
    ) -> requests.Response:
        assert request.headers["User-Agent"] == USER_AGENT
        assert kwargs["timeout"] == 5
        if request.method == "POST":
            self.posts.append(str(request.url))
        response = super().send(request, *args, **kwargs)
        if response.status_code == 400 and "badNonce" in response.text:
            self.bad_nonces += 1
        return response


def test_bad_nonce_is_retried_exactly_once(tmp_path: Path) -> None:
    adapter = CountingAdapter()
    session = requests.Session()
    session.mount("https://", adapter)
    with running_pebble(nonce_reject=100) as pebble:
        issuer = make_issuer(pebble, tmp_path, session=session)
        with pytest.raises(AcmeError) as caught:
            issuer.issue("a.test", "ec256", DnsSolver(pebble), deadline=deadline())
    assert caught.value.result == "rejected"
    assert "badNonce" in str(caught.value)
    assert str(caught.value).startswith("a.test: the CA rejected our nonce twice")
    # the first POST (the account lookup) and its one retry; nothing after
    assert len(adapter.posts) == 2
    assert adapter.posts[0] == adapter.posts[1]
    session.close()


def test_one_bad_nonce_is_survived(tmp_path: Path) -> None:
    """A fifth of the nonces rejected: each POST is retried once, so an order that met a
    ``badNonce`` can still succeed (orders are repeated until one did; a rare double rejection
    fails its order, as it should)."""
    with running_pebble(nonce_reject=20) as pebble:
        adapter = CountingAdapter()
        session = requests.Session()
        session.mount("https://", adapter)
        issuer = make_issuer(pebble, tmp_path, session=session)
        survived = False
        failures: list[str] = []
        for _ in range(20):
            adapter.bad_nonces = 0
            try:
                issuer.issue("a.test", "ec256", DnsSolver(pebble), deadline=deadline())
            except AcmeError as error:
                failures.append(str(error))
                continue
            if adapter.bad_nonces:
                survived = True
                break
        session.close()
    assert survived
    assert all("badNonce" in failure for failure in failures)


def test_a_missing_pebble_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pebble_support, "PEBBLE", "/nonexistent/pebble")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception), running_pebble():
        pass
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception), running_pebble():
        pass
