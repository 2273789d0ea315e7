"""The RFC 8555 client (SPEC §12.3): one certificate for one domain from an ACME CA, over
certbot's ``acme`` library (``ClientV2`` and ``ClientNetwork``, JWS with ``josepy``).

Ring 1, blocking: ``Issuer.issue`` runs in a worker thread (the manager starts it), never on the
event loop, and touches no trio object. Nurseries: none. Deadlines: every HTTP call is bounded
by ``timeout`` (requests' connect and read timeouts, set on the ``ClientNetwork``); the order as
a whole stops at ``deadline``, a value of the injected ``clock``, checked at every poll. Waits go
through the injected ``sleep``, so tests drive time with a fake clock.

One ``issue``:

1. the account key (EC P-256) is read from storage, or made once and stored (0600);
2. the account: the one in ``account.json`` when it was made at this directory; else looked up
   with ``onlyReturnExisting`` (the key may already own one there), else created with
   ``mailto:<email>`` and the terms agreed; ``account.json`` is then saved. A stored account the
   CA does not know (``accountDoesNotExist``: a test CA that restarted) is found or created
   again, once;
3. ONE order for the domain (SPEC §12.3; A3S put every domain in one order);
4. each authorization still pending: the challenge of ``solver.challenge_type`` is presented,
   answered (``{}``) and the authorization polled until it leaves ``pending``; ``cleanup``
   follows every ``present``, whatever happened. The solver gets the authorization's
   identifier, which for ``*.example.com`` is ``example.com`` (RFC 8555 §7.1.3);
5. the order is polled until ``ready``, finalized with a CSR for a new key of ``key_type``,
   polled until ``valid``, and its full chain downloaded; the chain's first certificate must
   name the domain and hold the new key.

Polling is our own loop (``ClientV2.poll_and_finalize`` sleeps on the wall clock): the first
poll at once, then after ``Retry-After`` (delta-seconds, or an HTTP-date measured against the
answer's own ``Date``), 2 s when absent or unreadable, at least 1 s, capped at 2 min, and
never past the deadline; at the deadline the order fails (``ca_error``, "timed out").

``badNonce`` (RFC 8555 §6.5): ``acme.client.ClientNetwork.post`` already retries a POST once,
with a fresh nonce from ``newNonce``; we rely on it and add no retry. A second ``badNonce``
reaches us and fails the order (``rejected``).

Errors: every failure the CA, the network or our storage causes is an ``AcmeError`` whose
``result`` is the ``a3s_acme_orders_total`` label: ``ca_error`` (unreachable, TLS, timeouts, a
problem document with a 5xx status or of type ``serverInternal``, answers that are not ACME, a
chain for another name or key), ``rejected`` (any other problem document: the CA refused the
account, the order, a challenge or the CSR; ``badNonce`` twice) and ``invalid`` (our side: an
unknown key type, an unusable account key, storage, a solver that could not present). Messages
name the domain and the CA's problem type and detail.

Must not: put key material in a message, log line or repr (``Issued`` hides its key); read
time or sleep other than through ``clock`` and ``sleep``; put several domains in one order;
keep a connection after ``issue`` returns.
"""

from __future__ import annotations

import base64
import email.utils
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, Protocol

import requests
from acme import client as acme_client
from acme import errors as acme_errors
from acme import messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from josepy.errors import DeserializationError
from josepy.interfaces import JSONDeSerializable
from josepy.jwa import ES256
from josepy.jwk import JWKEC

from a3s_gateway.acme.keys import (
    KEY_TYPES,
    certificate_names,
    key_matches,
    make_csr,
    new_private_key,
)
from a3s_gateway.acme.storage import AcmeStorage, StorageError, StoredAccount
from a3s_gateway.errors import GatewayError, one_line
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "DEFAULT_RETRY_AFTER",
    "MAX_RETRY_AFTER",
    "MIN_RETRY_AFTER",
    "USER_AGENT",
    "AcmeError",
    "AcmeResult",
    "Issued",
    "Issuer",
    "Solver",
    "retry_delay",
]

log: Final = logging.getLogger("a3s_gateway.acme")

#: Seconds between polls when the CA sends no (readable) ``Retry-After`` (SPEC §12.3).
DEFAULT_RETRY_AFTER: Final = 2.0
#: The longest wait between polls, whatever ``Retry-After`` asks (SPEC §12.3).
MAX_RETRY_AFTER: Final = 120.0
#: The shortest: a CA answering ``Retry-After: 0`` (or a past date) is not polled in a loop.
MIN_RETRY_AFTER: Final = 1.0
USER_AGENT: Final = f"a3s-gateway/{__version__}"

AcmeResult = Literal["ca_error", "rejected", "invalid"]

_DIRECTORY_FIELDS: Final = ("newNonce", "newAccount", "newOrder")
#: Problem types that say the CA itself failed, not that it refused us.
_CA_FAILURES: Final = frozenset({"serverInternal"})


class AcmeError(GatewayError):
    """An order failed; ``result`` is the ``a3s_acme_orders_total{result}`` label."""

    def __init__(self, message: str, *, result: AcmeResult) -> None:
        super().__init__(message)
        self.result: AcmeResult = result


class Solver(Protocol):
    """What answers one challenge type: ``present`` publishes the answer for ``domain`` (the
    authorization's identifier), ``cleanup`` removes it. Both block; both may raise."""

    @property
    def challenge_type(self) -> str:
        """``http-01``, ``tls-alpn-01`` or ``dns-01``."""
        ...

    def present(self, domain: str, token: str, key_authorization: str) -> None: ...

    def cleanup(self, domain: str, token: str, key_authorization: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Issued:
    """A new certificate: the full chain (leaf first) and its private key, both PEM."""

    chain_pem: bytes
    key_pem: bytes = field(repr=False)


class _EmptyObject(JSONDeSerializable):
    """The ``{}`` body that tells the CA a challenge is ready (RFC 8555 §7.5.1). ``acme`` has
    no class for TLS-ALPN-01, and its responses to the others serialise to ``{}`` too."""

    def to_partial_json(self) -> dict[str, str]:
        return {}

    @classmethod
    def from_json(cls, jobj: object) -> _EmptyObject:
        return cls()


def retry_delay(headers: Mapping[str, str], *, wall_now: float | None = None) -> float:
    """Seconds to wait before polling again, from ``Retry-After`` (RFC 9110 §10.2.3):
    delta-seconds, or an HTTP-date measured against the answer's ``Date`` header (else
    ``wall_now``, else this host's clock). ``DEFAULT_RETRY_AFTER`` when absent or unreadable;
    at least ``MIN_RETRY_AFTER``, at most ``MAX_RETRY_AFTER``."""
    value = headers.get("Retry-After", "").strip()
    if not value:
        return DEFAULT_RETRY_AFTER
    if value.isdigit():
        seconds = float(value)
    else:
        when = _http_date(value)
        if when is None:
            return DEFAULT_RETRY_AFTER
        now = _http_date(headers.get("Date", ""))
        if now is None:
            now = time.time() if wall_now is None else wall_now
        seconds = when - now
    return min(max(seconds, MIN_RETRY_AFTER), MAX_RETRY_AFTER)


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _problem_text(problem: messages.Error) -> str:
    """``<type>: <detail>`` of a problem document, on one line (the CA's words, bounded)."""
    detail = problem.detail or problem.title or ""
    for sub in problem.subproblems or ():
        detail += f"; {sub.typ}: {sub.detail or ''}"
    return one_line(f"{problem.typ}: {detail}" if detail else str(problem.typ))


def _failure(domain: str, exc: Exception, status: int) -> AcmeError | None:
    """The ``AcmeError`` for what the CA, the network or storage raised (``status``: the HTTP
    status of the CA's last answer); None for anything else."""
    match exc:
        case messages.Error() if exc.code == "badNonce":
            text = f"{domain}: the CA rejected our nonce twice ({_problem_text(exc)})"
            return AcmeError(text, result="rejected")
        case messages.Error() if exc.code in _CA_FAILURES or status >= 500:
            text = f"{domain}: the CA failed: HTTP {status}, {_problem_text(exc)}"
            return AcmeError(text, result="ca_error")
        case messages.Error():
            text = f"{domain}: the CA refused: {_problem_text(exc)}"
            return AcmeError(text, result="rejected")
        case requests.Timeout():
            return AcmeError(f"{domain}: the CA did not answer in time", result="ca_error")
        case requests.RequestException():
            text = f"{domain}: the CA is unreachable: {one_line(str(exc))}"
            return AcmeError(text, result="ca_error")
        case acme_errors.Error() | DeserializationError():
            text = f"{domain}: the CA's answer is not usable ACME: {_answer_text(exc)}"
            return AcmeError(text, result="ca_error")
        case StorageError():
            return AcmeError(f"{domain}: {exc}", result="invalid")
    return None


def _answer_text(exc: Exception) -> str:
    """What an ``acme`` client error says; a bare ``requests.Response`` argument (an answer
    that was not a problem document) is reduced to its status line."""
    first = exc.args[0] if exc.args else None
    if isinstance(first, requests.Response):
        return f"HTTP {first.status_code} {one_line(first.reason or '')}".strip()
    return one_line(str(exc)) or type(exc).__name__


def _load_account_key(domain: str, key_pem: bytes, path: str) -> JWKEC:
    """The stored account key as a JWK; ``AcmeError`` (invalid) unless it is EC P-256."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        message = f"{domain}: the ACME account key in {path} is not an unencrypted EC P-256 key"
        raise AcmeError(message, result="invalid")
    return JWKEC(key=key)


def _json_of(response: requests.Response) -> dict[str, object]:
    try:
        body: object = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise acme_errors.ClientError(response)
    return body


def _status_of(response: requests.Response) -> str:
    return str(_json_of(response).get("status", ""))


def _post_as_get(client: acme_client.ClientV2, url: str) -> requests.Response:
    """A POST-as-GET (RFC 8555 §6.3): a signed request with an empty payload."""
    return client.net.post(url, None, new_nonce_url=client.directory["newNonce"])


def _key_authorization(token: str, account_key: JWKEC) -> str:
    """``token || '.' || base64url(JWK thumbprint)`` (RFC 8555 §8.1)."""
    thumbprint = account_key.public_key().thumbprint()
    return token + "." + base64.urlsafe_b64encode(thumbprint).decode().rstrip("=")


class _StatusRecorder:
    """A ``requests`` response hook that keeps the HTTP status of the CA's last answer: a
    problem document that comes with a 5xx is the CA failing (``ca_error``), not refusing."""

    def __init__(self) -> None:
        self.last = 0

    def __call__(self, response: requests.Response, **kwargs: object) -> None:
        self.last = response.status_code


@dataclass(frozen=True, slots=True)
class _Order:
    """One ``issue``'s context: what every step needs."""

    domain: str
    client: acme_client.ClientV2
    account_key: JWKEC
    deadline: float


class Issuer:
    """Orders certificates from one ACME directory with one account (see the module docstring).

    ``session`` replaces the ``requests`` session of every order (tests mount a scripted CA on
    it); by default each order opens its own and closes it at the end. Not thread-safe: one
    ``issue`` at a time per ``Issuer``.
    """

    def __init__(
        self,
        storage: AcmeStorage,
        *,
        directory_url: str,
        email: str,
        ca_file: str | None = None,
        timeout: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        user_agent: str = USER_AGENT,
        session: requests.Session | None = None,
    ) -> None:
        self.storage = storage
        self.directory_url = directory_url
        self.email = email
        self._ca_file = ca_file
        self._timeout = timeout
        self._sleep = sleep
        self._clock = clock
        self._user_agent = user_agent
        self._session = session

    def issue(self, domain: str, key_type: str, solver: Solver, *, deadline: float) -> Issued:
        """A certificate for ``domain`` with a new key of ``key_type``, validated by ``solver``.

        Blocks (network, ``sleep``) until done or ``deadline`` (a ``clock`` value). Raises
        ``AcmeError``; an exception of another kind is a bug, and passes through.
        """
        if key_type not in KEY_TYPES:
            raise AcmeError(f"{domain}: unknown key type {key_type!r}", result="invalid")
        network = self._network()
        answers = _StatusRecorder()
        network.session.hooks["response"].append(answers)
        try:
            order = self._start(domain, network, deadline)
            key_pem = new_private_key(key_type)
            resource = self._new_order(order, make_csr(domain, key_pem))
            for authorization in resource.authorizations:
                self._authorize(order, authorization, solver)
            chain_pem = self._finalize(order, resource)
        except AcmeError:
            raise
        except Exception as exc:
            failure = _failure(domain, exc, answers.last)
            if failure is None:
                raise
            raise failure from exc
        finally:
            network.session.hooks["response"].remove(answers)
            if self._session is None:
                network.session.close()
        _check_chain(domain, chain_pem, key_pem)
        return Issued(chain_pem=chain_pem, key_pem=key_pem)

    def _network(self) -> acme_client.ClientNetwork:
        network = acme_client.ClientNetwork(
            alg=ES256,
            # requests takes a CA bundle's path where acme's annotation says bool.
            verify_ssl=self._ca_file or True,  # type: ignore[arg-type]
            user_agent=self._user_agent,
            timeout=math.ceil(self._timeout),
        )
        if self._session is not None:
            network.session.close()
            network.session = self._session
        return network

    def _start(self, domain: str, network: acme_client.ClientNetwork, deadline: float) -> _Order:
        """The account key, the directory and the account: a client ready to order."""
        self.storage.ensure()
        key_pem = self.storage.account_key()
        if key_pem is None:
            key_pem = new_private_key("ec256")
            self.storage.save_account_key(key_pem)
        account_key = _load_account_key(domain, key_pem, self.storage.path)
        network.key = account_key
        directory = acme_client.ClientV2.get_directory(self.directory_url, network)
        missing = [name for name in _DIRECTORY_FIELDS if name not in directory.to_partial_json()]
        if missing:
            text = f"{domain}: {self.directory_url} is not an ACME directory (no {missing[0]})"
            raise AcmeError(text, result="ca_error")
        order = _Order(domain, acme_client.ClientV2(directory, network), account_key, deadline)
        stored = self.storage.account()
        if stored is not None and stored.directory == self.directory_url:
            _use_account(order.client, stored.account_url)
        else:
            self._register(order.client)
        return order

    def _register(self, client: acme_client.ClientV2) -> None:
        """Find the key's account at this CA, or create one; remember it in ``account.json``."""
        client.net.account = None
        try:
            existing = client.new_account(messages.NewRegistration(only_return_existing=True))
        except acme_errors.ConflictError as found:  # 200 + Location: it exists
            account_url = found.location
        except messages.Error as problem:
            if problem.code != "accountDoesNotExist":
                raise
            account_url = self._create_account(client)
        else:  # a CA that created one although asked not to: its Location is the account
            account_url = existing.uri
        _use_account(client, account_url)
        account = StoredAccount(
            directory=self.directory_url, account_url=account_url, email=self.email
        )
        self.storage.save_account(account)

    def _create_account(self, client: acme_client.ClientV2) -> str:
        new = messages.NewRegistration.from_data(email=self.email, terms_of_service_agreed=True)
        try:
            created = client.new_account(new)
        except acme_errors.ConflictError as found:  # created meanwhile, by another gateway
            return found.location
        return created.uri

    def _new_order(self, order: _Order, csr_pem: bytes) -> messages.OrderResource:
        """The order for ``order.domain``; a stored account the CA does not know is found or
        created again, once."""
        try:
            return order.client.new_order(csr_pem)
        except messages.Error as problem:
            if problem.code != "accountDoesNotExist":
                raise
        log.info("ACME account for %s unknown to the CA: registering again", order.domain)
        self._register(order.client)
        return order.client.new_order(csr_pem)

    def _authorize(
        self, order: _Order, authorization: messages.AuthorizationResource, solver: Solver
    ) -> None:
        """Answer one authorization's challenge (unless it is already valid) and wait for the
        CA's verdict."""
        status = authorization.body.status.name
        if status == "valid":
            return
        if status != "pending":
            raise AcmeError(f"{order.domain}: the authorization is {status}", result="rejected")
        kind = solver.challenge_type
        challenge, token = _challenge(order.domain, authorization, kind)
        key_authorization = _key_authorization(token, order.account_key)
        identifier = str(authorization.body.identifier.value)
        try:
            _present(solver, identifier, token, key_authorization)
            order.client.net.post(
                challenge.uri, _EmptyObject(), new_nonce_url=order.client.directory["newNonce"]
            )
            response = self._poll(order, authorization.uri, "authorization", {"pending"})
        finally:
            _cleanup(solver, identifier, token, key_authorization)
        _check_authorization(order.domain, kind, response)

    def _finalize(self, order: _Order, resource: messages.OrderResource) -> bytes:
        """Finalize the order once ready, wait until it is valid and download the chain."""
        url = resource.uri
        if not url:
            raise acme_errors.ClientError("the new order has no Location")
        response = self._poll(order, url, "order", {"pending"})
        _check_order(order.domain, response, expected="ready")
        order.client.begin_finalization(resource)
        response = self._poll(order, url, "certificate", {"processing", "ready"})
        body = _check_order(order.domain, response, expected="valid")
        if not body.certificate:
            raise acme_errors.ClientError("the valid order names no certificate")
        return _post_as_get(order.client, body.certificate).content

    def _poll(self, order: _Order, url: str, what: str, waiting: set[str]) -> requests.Response:
        """POST-as-GET ``url`` until its status is not in ``waiting``: at once, then after each
        answer's ``Retry-After`` (never past the deadline). The deadline is ``ca_error``."""
        while True:
            response = _post_as_get(order.client, url)
            status = _status_of(response)
            if status not in waiting:
                return response
            now = self._clock()
            if now >= order.deadline:
                text = f"{order.domain}: timed out waiting for the {what} (still {status})"
                raise AcmeError(text, result="ca_error")
            self._sleep(min(retry_delay(response.headers), order.deadline - now))


def _use_account(client: acme_client.ClientV2, account_url: str) -> None:
    """Sign what follows with the account's URL as ``kid`` (RFC 8555 §6.2)."""
    client.net.account = messages.RegistrationResource(
        uri=account_url, body=messages.Registration()
    )


def _challenge(
    domain: str, authorization: messages.AuthorizationResource, kind: str
) -> tuple[messages.ChallengeBody, str]:
    """The authorization's challenge of type ``kind`` and its token."""
    for challenge in authorization.body.challenges:
        fields = challenge.chall.to_partial_json()
        if isinstance(fields, dict) and fields.get("type") == kind:
            token = fields.get("token")
            if not isinstance(token, str) or not token:
                raise acme_errors.ClientError(f"the {kind} challenge has no token")
            return challenge, token
    offered = ", ".join(
        str(c.chall.to_partial_json().get("type")) for c in authorization.body.challenges
    )
    text = f"{domain}: the CA offers no {kind} challenge (only: {offered or 'none'})"
    raise AcmeError(text, result="rejected")


def _present(solver: Solver, domain: str, token: str, key_authorization: str) -> None:
    try:
        solver.present(domain, token, key_authorization)
    except AcmeError:
        raise
    except Exception as exc:
        text = f"{domain}: presenting the {solver.challenge_type} challenge failed: "
        raise AcmeError(text + one_line(str(exc) or type(exc).__name__), result="invalid") from exc


def _cleanup(solver: Solver, domain: str, token: str, key_authorization: str) -> None:
    """``solver.cleanup``; a failure is logged, not raised: the order's outcome matters more
    than a record left behind (and must not be hidden by it)."""
    try:
        solver.cleanup(domain, token, key_authorization)
    except Exception as exc:
        log.warning(
            "ACME %s cleanup for %s failed: %s",
            solver.challenge_type,
            domain,
            one_line(str(exc) or type(exc).__name__),
        )


def _check_authorization(domain: str, kind: str, response: requests.Response) -> None:
    """``rejected`` unless the polled authorization is valid, with the challenge's problem."""
    body: messages.Authorization = messages.Authorization.from_json(_json_of(response))
    status = body.status.name
    if status == "valid":
        return
    problems = [c.error for c in body.challenges if c.error is not None]
    reason = _problem_text(problems[0]) if problems else f"the authorization is {status}"
    raise AcmeError(f"{domain}: the CA rejected the {kind} challenge: {reason}", result="rejected")


def _check_order(domain: str, response: requests.Response, *, expected: str) -> messages.Order:
    """The polled order; ``rejected`` unless its status is ``expected``."""
    body: messages.Order = messages.Order.from_json(_json_of(response))
    status = body.status.name
    if status == expected:
        return body
    reason = _problem_text(body.error) if body.error is not None else f"the order is {status}"
    raise AcmeError(f"{domain}: the CA did not issue: {reason}", result="rejected")


def _check_chain(domain: str, chain_pem: bytes, key_pem: bytes) -> None:
    """The downloaded chain must be PEM certificates whose first names ``domain`` and holds
    our new key; anything else is the CA's fault (``ca_error``)."""
    try:
        names = certificate_names(chain_pem)
        ours = key_matches(chain_pem, key_pem)
    except ValueError:
        raise AcmeError(
            f"{domain}: the CA sent no PEM certificate chain", result="ca_error"
        ) from None
    if domain.lower() not in {name.lower() for name in names} or not ours:
        text = f"{domain}: the CA sent a certificate for another name or key"
        raise AcmeError(text, result="ca_error")
