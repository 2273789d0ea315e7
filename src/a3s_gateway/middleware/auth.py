"""The credential-checking middlewares ``api-key`` (SPEC §8.2) and ``basic-auth`` (SPEC §8.3).

Ring 0: pure; no trio, sockets, TLS, clocks or logging.

Both have a request side only: they let the request through (``None``) or answer 401 with a
``WWW-Authenticate`` challenge through ``error_response``. Every secret comparison goes through
``hmac.compare_digest`` and never stops early: an API key is compared with every configured key,
and a Basic username and password are always both compared, so the time taken does not tell a
client which key matched, how much of one matched, or which half of a login was wrong.

Must not: log or echo credentials, cache anything per request on the instance (one instance is
shared by every router that lists the definition, SPEC §8.1), accept credentials outside the
exact forms SPEC gives (one ``header`` line; ``Basic`` + strict padded base64 of UTF-8
``user:password``), or build a response once and reuse it (later response sides change the
header list in place).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.responses import error_response

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import ApiKey, BasicAuth
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "API_KEY_ERROR",
    "AUTHENTICATION_REQUIRED",
    "INVALID_CREDENTIALS",
    "ApiKeyMiddleware",
    "BasicAuthMiddleware",
    "decode_basic_token",
]

#: The 401 ``error`` text of ``api-key`` for a missing, duplicated or wrong key (SPEC §8.2).
API_KEY_ERROR: Final = "invalid or missing API key"
#: The 401 text of ``basic-auth`` when no ``Basic`` credentials were sent (SPEC §8.3).
AUTHENTICATION_REQUIRED: Final = "authentication required"
#: The 401 text of ``basic-auth`` when ``Basic`` credentials were sent but are not accepted.
INVALID_CREDENTIALS: Final = "invalid credentials"

_AUTHORIZATION: Final = b"authorization"
_WWW_AUTHENTICATE: Final = b"www-authenticate"
_BASIC: Final = b"basic"


class ApiKeyMiddleware(Middleware):
    """``api-key``: exactly one ``header`` line whose value equals one of ``keys`` (SPEC §8.2).

    The value is compared as the bytes received with each key's UTF-8 bytes. On success the
    request goes on unchanged (the key is forwarded too, as in SPEC).
    """

    __slots__ = ("_challenge", "_field", "_keys")

    def __init__(self, name: str, *, header: str, keys: Iterable[str]) -> None:
        super().__init__(name)
        self._field = header.lower().encode("ascii")
        self._keys = tuple(key.encode() for key in keys)
        if not self._keys:
            raise ValueError("api-key needs at least one key")
        self._challenge = b'ApiKey header="' + header.encode("ascii") + b'"'

    @classmethod
    def from_config(cls, name: str, block: ApiKey) -> Self:
        """The middleware of the validated ``api-key`` definition ``name``."""
        return cls(name, header=block.header, keys=block.keys)

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Pass a request carrying one configured key; otherwise answer 401."""
        values = state.values(self._field)
        if len(values) == 1 and self.accepts(values[0]):
            return None
        return error_response(401, API_KEY_ERROR, extra=[(_WWW_AUTHENTICATE, self._challenge)])

    def accepts(self, value: bytes) -> bool:
        """Whether ``value`` is a configured key, comparing it with every key (no early exit)."""
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(value, key)
        return matched


class BasicAuthMiddleware(Middleware):
    """``basic-auth``: ``Authorization: Basic`` with one username and password (SPEC §8.3).

    ``Basic`` matches case-insensitively, followed by one or more spaces and a token that must be
    canonical, padded base64 (RFC 4648 §4: only the alphabet, ``=`` padding to a multiple of four,
    zero pad bits), decoding to UTF-8 with a ``:``; it splits at the first ``:``, so a password
    may contain ``:``. With ``remove_header`` the ``Authorization`` lines are dropped from the
    forwarded request after a success.

    No ``Authorization`` line, or one with another scheme, is "authentication required"; more
    than one line, or ``Basic`` credentials that are malformed or wrong, are "invalid
    credentials".
    """

    __slots__ = ("_challenge", "_password", "_remove_header", "_username")

    def __init__(
        self,
        name: str,
        *,
        username: str,
        password: str,
        realm: str = "a3s-gateway",
        remove_header: bool = False,
    ) -> None:
        super().__init__(name)
        if ":" in username:
            raise ValueError("a basic-auth username cannot contain ':'")
        if '"' in realm:
            raise ValueError("a basic-auth realm cannot contain '\"'")
        self._username = username.encode()
        self._password = password.encode()
        self._remove_header = remove_header
        self._challenge = b'Basic realm="' + realm.encode() + b'", charset="UTF-8"'

    @classmethod
    def from_config(cls, name: str, block: BasicAuth) -> Self:
        """The middleware of the validated ``basic-auth`` definition ``name``."""
        return cls(
            name,
            username=block.username,
            password=block.password,
            realm=block.realm,
            remove_header=block.remove_header,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Pass a request with the configured credentials; otherwise answer 401."""
        values = state.values(_AUTHORIZATION)
        if not values:
            return self._reject(AUTHENTICATION_REQUIRED)
        if len(values) > 1:
            return self._reject(INVALID_CREDENTIALS)
        scheme, _, token = values[0].partition(b" ")
        if scheme.lower() != _BASIC:
            return self._reject(AUTHENTICATION_REQUIRED)
        credentials = decode_basic_token(token.lstrip(b" "))
        if credentials is None or not self.accepts(*credentials):
            return self._reject(INVALID_CREDENTIALS)
        if self._remove_header:
            state.headers = [line for line in state.headers if line[0] != _AUTHORIZATION]
        return None

    def accepts(self, username: bytes, password: bytes) -> bool:
        """Whether the pair is the configured one; both halves are always compared."""
        username_ok = hmac.compare_digest(username, self._username)
        password_ok = hmac.compare_digest(password, self._password)
        return username_ok & password_ok

    def _reject(self, text: str) -> GeneratedResponse:
        return error_response(401, text, extra=[(_WWW_AUTHENTICATE, self._challenge)])


def decode_basic_token(token: bytes) -> tuple[bytes, bytes] | None:
    """The ``(username, password)`` UTF-8 bytes of a Basic token68, or None if malformed.

    The token must be canonical padded base64 (strict RFC 4648: re-encoding the decoded bytes
    gives the token back, which rules out missing or extra padding, characters outside the
    alphabet and non-zero pad bits); the decoded bytes must be valid UTF-8 and contain ``:``,
    and split at the first one.
    """
    try:
        decoded = base64.b64decode(token, validate=True)
    except binascii.Error:
        return None
    if base64.b64encode(decoded) != token:
        return None
    try:
        decoded.decode("utf-8")
    except UnicodeDecodeError:
        return None
    username, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return username, password
