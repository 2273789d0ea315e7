"""``acme/issuer.py`` against a scripted CA with a fake clock: ``Retry-After`` (seconds, HTTP
date, default, floor, cap), the deadline, and how failures map to ``AcmeError.result``.

``ScriptedCa`` is a ``requests`` transport adapter mounted on ``https://ca.test/``: no socket,
no thread. It speaks enough RFC 8555 for one order (directory, nonces, account lookup and
creation, one order with one authorization and one challenge, finalize, certificate) and signs
a real certificate for the CSR it gets, so the issuer's own checks run. Each poll of the
authorization (once answered) and of the order (once finalized) takes the next scripted
``Step``; the last one repeats. Time is ``FakeTime``: ``sleep`` only advances ``clock``.
"""

from __future__ import annotations

import base64
import datetime
import email.utils
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from a3s_gateway.acme.issuer import AcmeError, Issued, Issuer, retry_delay
from a3s_gateway.acme.storage import AcmeStorage, StoredAccount

if TYPE_CHECKING:
    from pathlib import Path

BASE = "https://ca.test"
#: The scripted CA's wall clock (its ``Date`` header).
WALL = 1_800_000_000.0
TOKEN = "dGhpcyBpcyBhIHRva2VuIG9mIHRoZSBmYWtlIENBIQ"
JSON = "application/json"
PROBLEM = "application/problem+json"


def http_date(when: float) -> str:
    return email.utils.formatdate(when, usegmt=True)


@dataclass(frozen=True)
class Step:
    """One scripted poll answer: a status, maybe ``Retry-After``, maybe a problem."""

    status: str
    retry_after: str | None = None
    error: dict[str, str] | None = None


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _payload(request: requests.PreparedRequest) -> dict[str, Any]:
    body = request.body.decode() if isinstance(request.body, bytes) else str(request.body)
    encoded = json.loads(body)["payload"]
    return json.loads(_b64decode(encoded)) if encoded else {}


class ScriptedCa(BaseAdapter):
    """The scripted CA (module docstring). ``problems`` answers a path with a problem
    document (or ``(status, content type, bytes)``) instead of the normal answer."""

    def __init__(self) -> None:
        super().__init__()
        self.authz_polls = [Step("valid")]
        self.order_polls = [Step("valid")]
        self.challenge_types = ["dns-01"]
        self.identifier = "a.test"
        self.wildcard = False
        self.problems: dict[str, tuple[int, str, bytes]] = {}
        self.raises: dict[str, Exception] = {}
        self.requests: list[tuple[str, str]] = []
        self.answered = self.finalized = False
        self.leaf_key: ec.EllipticCurvePrivateKey | None = None  # else the CSR's key
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        self._chain = b""
        self._nonce = 0

    def problem(self, path: str, kind: str, detail: str, status: int = 400) -> None:
        document = {"type": f"urn:ietf:params:acme:error:{kind}", "detail": detail}
        self.problems[path] = (status, PROBLEM, json.dumps(document).encode())

    def close(self) -> None:
        pass

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        path = urlsplit(str(request.url)).path
        self.requests.append((str(request.method), path))
        if path in self.raises:
            raise self.raises[path]
        if path in self.problems:
            return self._answer(request, *self.problems[path])
        match path:
            case "/dir":
                directory = {n: f"{BASE}/{n}" for n in ("newNonce", "newAccount", "newOrder")}
                return self._json(request, directory)
            case "/newNonce":
                return self._answer(request, 200, JSON, b"")
            case "/newAccount":
                return self._account(request)
            case "/newOrder":
                return self._json(request, self._order("pending"), 201, f"{BASE}/order/1")
            case "/authz/1":
                steps = self.authz_polls if self.answered else [Step("pending")]
                return self._poll(request, steps, self._authorization)
            case "/chall/1":
                self.answered = True
                return self._json(request, self._challenge("dns-01", "processing"))
            case "/order/1":
                steps = self.order_polls if self.finalized else [Step("ready")]
                return self._poll(request, steps, self._order)
            case "/finalize/1":
                self._chain = self._issue(_payload(request)["csr"])
                self.finalized = True
                return self._json(request, self._order("processing"))
            case "/cert/1":
                return self._answer(request, 200, "application/pem-certificate-chain", self._chain)
        return self._answer(request, 404, "text/plain", b"no such path")

    def _poll(self, request: Any, steps: list[Step], body: Any) -> Any:
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else {}
        return self._json(request, body(step.status, step.error), headers=headers)

    def _account(self, request: requests.PreparedRequest) -> Any:
        if _payload(request).get("onlyReturnExisting"):
            document = {"type": "urn:ietf:params:acme:error:accountDoesNotExist"}
            return self._answer(request, 400, PROBLEM, json.dumps(document).encode())
        return self._json(request, {"status": "valid"}, 201, f"{BASE}/acct/1")

    def _challenge(self, kind: str, status: str, error: Any = None) -> dict[str, Any]:
        challenge = {"type": kind, "url": f"{BASE}/chall/1", "token": TOKEN, "status": status}
        return challenge | ({"error": error} if error else {})

    def _authorization(self, status: str, error: Any = None) -> dict[str, Any]:
        return {
            "status": status,
            "identifier": {"type": "dns", "value": self.identifier},
            "challenges": [self._challenge(k, status, error) for k in self.challenge_types],
        } | ({"wildcard": True} if self.wildcard else {})

    def _order(self, status: str, error: Any = None) -> dict[str, Any]:
        order: dict[str, Any] = {
            "status": status,
            "identifiers": [{"type": "dns", "value": "a.test"}],
            "authorizations": [f"{BASE}/authz/1"],
            "finalize": f"{BASE}/finalize/1",
        }
        if status == "valid":
            order["certificate"] = f"{BASE}/cert/1"
        return order | ({"error": error} if error else {})

    def _issue(self, csr_b64: str) -> bytes:
        csr = x509.load_der_x509_csr(_b64decode(csr_b64))
        public = self.leaf_key.public_key() if self.leaf_key else csr.public_key()
        now = datetime.datetime.now(datetime.UTC)
        issuer = x509.Name.from_rfc4514_string("CN=Scripted CA")
        leaf = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(issuer)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(
                csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value,
                critical=True,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        return leaf.public_bytes(serialization.Encoding.PEM)

    def _json(
        self,
        request: Any,
        body: object,
        status: int = 200,
        location: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        extra = dict(headers or {}) | ({"Location": location} if location else {})
        return self._answer(request, status, JSON, json.dumps(body).encode(), extra)

    def _answer(
        self,
        request: Any,
        status: int,
        content_type: str,
        content: bytes,
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        self._nonce += 1
        response = requests.Response()
        response.status_code = status
        response.reason = "Scripted"
        response.url = str(request.url)
        response.request = request
        nonce = base64.urlsafe_b64encode(b"nonce-%d" % self._nonce).decode().rstrip("=")
        response.headers = CaseInsensitiveDict(
            {"Content-Type": content_type, "Replay-Nonce": nonce, "Date": http_date(WALL)}
            | (headers or {})
        )
        response._content = content
        return response


@dataclass
class FakeTime:
    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


@dataclass
class RecordingSolver:
    challenge_type: str = "dns-01"
    fail_present: bool = False
    fail_cleanup: bool = False
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def present(self, domain: str, token: str, key_authorization: str) -> None:
        self.calls.append(("present", domain, token))
        assert key_authorization.startswith(token + ".")
        if self.fail_present:
            raise OSError("the DNS API said no")

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None:
        self.calls.append(("cleanup", domain, token))
        if self.fail_cleanup:
            raise OSError("the DNS API is gone")


@dataclass
class Setup:
    ca: ScriptedCa
    time: FakeTime
    issuer: Issuer
    solver: RecordingSolver

    def issue(self, domain: str = "a.test", key_type: str = "ec256", within: float = 300) -> Issued:
        deadline = self.time.now + within
        return self.issuer.issue(domain, key_type, self.solver, deadline=deadline)

    def fails(self, result: str, domain: str = "a.test", **kwargs: Any) -> str:
        with pytest.raises(AcmeError) as caught:
            self.issue(domain, **kwargs)
        assert caught.value.result == result
        message = str(caught.value)
        assert message.startswith(f"{domain}: ")
        assert "PRIVATE" not in message
        return message


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    ca = ScriptedCa()
    session = requests.Session()
    session.mount(f"{BASE}/", ca)
    fake = FakeTime()
    issuer = Issuer(
        AcmeStorage(str(tmp_path)),
        directory_url=f"{BASE}/dir",
        email="ops@example.com",
        sleep=fake.sleep,
        clock=fake.clock,
        session=session,
    )
    return Setup(ca, fake, issuer, RecordingSolver())


# ---------------------------------------------------------------------------- polling


def test_retry_after_seconds_are_honoured(setup: Setup) -> None:
    setup.ca.authz_polls = [Step("pending", "7"), Step("pending", "3"), Step("valid")]
    setup.ca.order_polls = [Step("processing", "4"), Step("valid")]
    issued = setup.issue()
    assert issued.chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert setup.time.sleeps == [7.0, 3.0, 4.0]
    assert [c[0] for c in setup.solver.calls] == ["present", "cleanup"]


def test_retry_after_as_an_http_date_counts_from_the_ca_date(setup: Setup) -> None:
    setup.ca.authz_polls = [Step("pending", http_date(WALL + 5)), Step("valid")]
    setup.issue()
    assert setup.time.sleeps == [5.0]


def test_retry_after_default_floor_and_cap(setup: Setup) -> None:
    setup.ca.authz_polls = [
        Step("pending"),  # none: 2 s
        Step("pending", "600"),  # capped at 2 min
        Step("pending", "0"),  # at least 1 s
        Step("pending", "soon"),  # unreadable: 2 s
        Step("pending", http_date(WALL - 60)),  # past: at least 1 s
        Step("valid"),
    ]
    setup.issue(within=1000)
    assert setup.time.sleeps == [2.0, 120.0, 1.0, 2.0, 1.0]


def test_retry_delay_reads_the_header() -> None:
    assert retry_delay({}) == 2.0
    assert retry_delay({"Retry-After": " 17 "}) == 17.0
    assert retry_delay({"Retry-After": http_date(WALL + 30)}, wall_now=WALL) == 30.0
    later = {"Retry-After": http_date(WALL + 30), "Date": http_date(WALL + 20)}
    assert retry_delay(later, wall_now=WALL) == 10.0  # the CA's Date wins over our clock
    assert retry_delay({"Retry-After": "-5"}) == 2.0


def test_polling_stops_at_the_deadline(setup: Setup) -> None:
    setup.ca.authz_polls = [Step("pending", "30")]
    message = setup.fails("ca_error", within=70)
    assert message == "a.test: timed out waiting for the authorization (still pending)"
    assert setup.time.sleeps == [30.0, 30.0, 10.0]  # never past the deadline
    assert [c[0] for c in setup.solver.calls] == ["present", "cleanup"]


def test_waiting_for_the_certificate_stops_at_the_deadline(setup: Setup) -> None:
    setup.ca.order_polls = [Step("processing")]
    message = setup.fails("ca_error", within=5)
    assert message == "a.test: timed out waiting for the certificate (still processing)"
    assert setup.time.sleeps == [2.0, 2.0, 1.0]


# ---------------------------------------------------------------------------- the flow


def test_one_account_is_created_then_reused(setup: Setup) -> None:
    setup.issue()
    posts = [path for method, path in setup.ca.requests if method == "POST"]
    assert posts[:2] == ["/newAccount", "/newAccount"]  # looked up, then created
    account = setup.issuer.storage.account()
    assert account == StoredAccount(f"{BASE}/dir", f"{BASE}/acct/1", "ops@example.com")
    setup.ca.requests.clear()
    setup.ca.answered = setup.ca.finalized = False
    setup.issue()
    assert ("POST", "/newAccount") not in setup.ca.requests


def test_an_account_of_another_directory_is_looked_up_again(setup: Setup) -> None:
    other = StoredAccount("https://other.test/dir", "https://other.test/acct/9", "x@y.z")
    setup.issuer.storage.ensure()
    setup.issuer.storage.save_account(other)
    setup.issue()
    assert setup.ca.requests.count(("POST", "/newAccount")) == 2
    account = setup.issuer.storage.account()
    assert account is not None
    assert account.account_url == f"{BASE}/acct/1"


def test_a_wildcard_is_presented_for_its_base_name(setup: Setup) -> None:
    setup.ca.wildcard = True
    issued = setup.issue("*.a.test")
    assert setup.solver.calls[0] == ("present", "a.test", TOKEN)
    assert b"CERTIFICATE" in issued.chain_pem
    assert "key_pem" not in repr(issued)


# ---------------------------------------------------------------------------- failures


def test_an_unknown_key_type_is_invalid_before_any_request(setup: Setup) -> None:
    message = setup.fails("invalid", key_type="dsa1024")
    assert message == "a.test: unknown key type 'dsa1024'"
    assert setup.ca.requests == []


def test_a_directory_that_is_not_acme_is_a_ca_error(setup: Setup) -> None:
    setup.ca.problems["/dir"] = (503, "text/html", b"<h1>down for maintenance</h1>")
    message = setup.fails("ca_error")
    assert "HTTP 503" in message


def test_a_timeout_is_a_ca_error(setup: Setup) -> None:
    setup.ca.raises["/newOrder"] = requests.ReadTimeout("read timed out")
    assert setup.fails("ca_error") == "a.test: the CA did not answer in time"


def test_a_refused_order_is_rejected_with_the_problem(setup: Setup) -> None:
    setup.ca.problem("/newOrder", "rejectedIdentifier", "a.test is on a block list", 403)
    message = setup.fails("rejected")
    assert "urn:ietf:params:acme:error:rejectedIdentifier: a.test is on a block list" in message


def test_a_server_internal_problem_is_a_ca_error(setup: Setup) -> None:
    setup.ca.problem("/newOrder", "serverInternal", "database on fire", 500)
    assert "database on fire" in setup.fails("ca_error")


def test_a_missing_challenge_type_is_rejected_without_presenting(setup: Setup) -> None:
    setup.ca.challenge_types = ["http-01", "tls-alpn-01"]
    message = setup.fails("rejected")
    assert message == "a.test: the CA offers no dns-01 challenge (only: http-01, tls-alpn-01)"
    assert setup.solver.calls == []


def test_a_solver_that_cannot_present_is_invalid_and_cleaned_up(setup: Setup) -> None:
    setup.solver.fail_present = True
    message = setup.fails("invalid")
    assert message == "a.test: presenting the dns-01 challenge failed: the DNS API said no"
    assert [c[0] for c in setup.solver.calls] == ["present", "cleanup"]
    assert ("POST", "/chall/1") not in setup.ca.requests


def test_a_failed_cleanup_is_logged_not_raised(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.solver.fail_cleanup = True
    setup.issue()
    assert "ACME dns-01 cleanup for a.test failed: the DNS API is gone" in caplog.text


def test_an_invalid_order_is_rejected_with_its_error(setup: Setup) -> None:
    error = {"type": "urn:ietf:params:acme:error:badCSR", "detail": "key too weak"}
    setup.ca.order_polls = [Step("invalid", error=error)]
    message = setup.fails("rejected")
    assert (
        message == "a.test: the CA did not issue: urn:ietf:params:acme:error:badCSR: key too weak"
    )


def test_a_certificate_for_another_key_is_a_ca_error(setup: Setup) -> None:
    setup.ca.leaf_key = ec.generate_private_key(ec.SECP256R1())
    message = setup.fails("ca_error")
    assert message == "a.test: the CA sent a certificate for another name or key"


def test_an_unusable_account_key_is_invalid(setup: Setup) -> None:
    setup.issuer.storage.ensure()
    setup.issuer.storage.save_account_key(b"-----BEGIN PRIVATE KEY-----\nnope\n")
    message = setup.fails("invalid")
    assert "account key in " in message
    assert "is not an unencrypted EC P-256 key" in message
    assert setup.ca.requests == []


def test_bad_nonce_twice_is_rejected(setup: Setup) -> None:
    setup.ca.problem("/newOrder", "badNonce", "stale nonce")
    message = setup.fails("rejected")
    assert message.startswith("a.test: the CA rejected our nonce twice")
    assert setup.ca.requests.count(("POST", "/newOrder")) == 2


def test_a_problem_with_a_5xx_status_is_a_ca_error(setup: Setup) -> None:
    setup.ca.problem("/newOrder", "malformed", "upstream connect error", 503)
    message = setup.fails("ca_error")
    assert message == (
        "a.test: the CA failed: HTTP 503, urn:ietf:params:acme:error:malformed: "
        "upstream connect error"
    )
