"""The ACME directory on disk: account, certificates, HTTP-01 tokens and the order lock
(SPEC §12.4).

Ring 1, blocking: every function here does file I/O and is called in a worker thread
(``trio.to_thread.run_sync``) by the manager, the issuer and the HTTP-01 responder; it owns no
nursery and sets no deadline (local file operations). Layout under ``acme_storage_path``::

    account.json          {"directory", "account_url", "email"}            0600
    account.key.pem       the account key                                  0600
    <domain>/cert.pem     full chain ("*." written as "_wildcard.")        0600
    <domain>/key.pem      the certificate's key                            0600
    <domain>/meta.json    {"domain", "not_before", "not_after", "issued_at", "directory"}
    challenges/<token>    HTTP-01 key authorizations, read by replicas     0600
    fallback/pair.pem     the self-signed fallback: key and certificate    0600
    .lock                 {"owner", "created"}: one ordering gateway at a time

Directories are 0700 (an existing one is tightened). Every file is 0600: ``cert.pem`` holds
nothing secret, but one mode for everything is simpler to check and nobody else needs to read
it. Every write is atomic: a temporary file created with ``O_EXCL`` in the same directory,
written, flushed to disk and renamed over the target (``os.replace``), so a reader sees the
old file or the new one, never a part. ``meta.json``'s validity is always parsed from the
certificate itself.

The lock (``try_lock``) is an exclusive create of ``.lock``; gateways sharing the directory
(replicas on a shared volume) take it before ordering. A lock whose recorded ``created`` (or,
when it cannot be read, whose modification time) is ``LOCK_STALE_SECONDS`` older than ``now``
is broken: renamed away to a private name, checked to be the very file judged stale (a
contender may have broken and retaken it meanwhile; such a fresh lock is put back), removed,
and the exclusive create tried again. Whoever wins the create owns the lock. ``now`` is Unix
time (``time.time()``), since the lock is compared across machines.

Must not: put file contents (keys, key authorizations) into exceptions or logs (``StorageError``
names the path and what is wrong), follow a challenge token outside ``challenges/``, or log.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from a3s_gateway.acme.keys import (
    certificate_validity,
    fallback_certificate,
    key_matches,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from datetime import datetime

__all__ = [
    "LOCK_STALE_SECONDS",
    "MAX_CHALLENGE_BYTES",
    "AcmeStorage",
    "StorageError",
    "StoredAccount",
    "StoredCertificate",
    "domain_directory_name",
    "read_challenge",
]

#: A lock older than this (seconds) is abandoned and may be broken (SPEC §12.4: 10 min).
LOCK_STALE_SECONDS: Final = 600.0
#: Largest key authorization stored or served (a token and a thumbprint are about 90 bytes).
MAX_CHALLENGE_BYTES: Final = 1024

_DIRECTORY_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_LOCK: Final = ".lock"
_CHALLENGES: Final = "challenges"
#: Largest lock, account or meta file read (they are a few hundred bytes).
_MAX_SMALL_FILE: Final = 64 * 1024
#: Largest chain read (a leaf and two intermediates are a few KiB).
_MAX_CHAIN: Final = 1024 * 1024
#: The fallback certificate is made again this long before its end.
_FALLBACK_MARGIN: Final = 86400.0
#: RFC 8555 §8.1: a token is base64url; 128 characters is far above the 43 CAs send.
_TOKEN: Final = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")
#: A host name, optionally with one leading ``*.`` label (the shape config validation checks).
_DOMAIN: Final = re.compile(
    r"(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\Z"
)
_NOFOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0)


class StorageError(Exception):
    """A storage operation failed, or what is stored is broken. The message names the path and
    the reason, never the contents."""


@dataclass(frozen=True, slots=True)
class StoredAccount:
    """``account.json``: the ACME account of this storage."""

    directory: str
    account_url: str
    email: str


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    """One domain's certificate (full chain), its key and its metadata (Unix seconds).

    The PEM fields are left out of the ``repr`` (the key is a secret, the chain is noise)."""

    domain: str
    cert_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    not_before: float
    not_after: float
    issued_at: float
    directory: str


@dataclass(frozen=True, slots=True)
class _LockState:
    """What ``.lock`` says: its owner (``None`` when unreadable) and when it was taken (its
    recorded ``created``, else the file's modification time)."""

    owner: str | None
    created: float


def domain_directory_name(domain: str) -> str:
    """The directory of ``domain`` under the storage: lower-cased, a leading ``*.`` written as
    ``_wildcard.`` (``*.example.com`` -> ``_wildcard.example.com``; names with ``_`` are not
    host names, so the two never collide). Raises ``ValueError`` for anything but a host name
    with at most one leading ``*.`` label, so no name can leave the storage directory."""
    if _DOMAIN.match(domain) is None:
        raise ValueError(f"{domain!r} is not a host name (optionally with a leading '*.')")
    lowered = domain.lower()
    return "_wildcard." + lowered[2:] if lowered.startswith("*.") else lowered


def read_challenge(storage_path: str, token: str) -> str | None:
    """The key authorization stored for HTTP-01 ``token`` under ``storage_path``, or ``None``
    when the token is not base64url (1-128 characters), nothing is stored, the file is larger
    than ``MAX_CHALLENGE_BYTES`` or not ASCII, or it cannot be read. Follows no symbolic link
    at the token's own name."""
    if _TOKEN.match(token) is None:
        return None
    path = os.path.join(storage_path, _CHALLENGES, token)
    try:
        data = _read_optional(path, MAX_CHALLENGE_BYTES, follow=False)
    except StorageError:
        return None
    if data is None or not data.isascii():
        return None
    return data.decode("ascii")


class AcmeStorage:
    """The ACME directory at ``path`` (SPEC §12.4). Blocking; safe to use from several threads
    and processes (atomic writes, the lock for orders). Raises ``StorageError`` for failed
    operations and broken contents, ``ValueError`` for arguments that are not a domain or a
    token."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"AcmeStorage({self.path!r})"

    def _file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    def ensure(self) -> None:
        """Create the directory (and its parents) if missing; make it 0700 either way."""
        _make_directory(self.path)

    # -- account ---------------------------------------------------------------------------------

    def account_key(self) -> bytes | None:
        """``account.key.pem``, or ``None`` when there is none yet."""
        return _read_optional(self._file("account.key.pem"), _MAX_SMALL_FILE)

    def save_account_key(self, key_pem: bytes) -> None:
        """Store the account key (0600, atomic)."""
        self.ensure()
        _write_atomic(self._file("account.key.pem"), key_pem)

    def account(self) -> StoredAccount | None:
        """``account.json``, or ``None`` when it is missing or cannot be read or understood."""
        try:
            document = _read_json(self._file("account.json"))
        except StorageError:
            return None
        if document is None:
            return None
        fields = [document.get(name) for name in ("directory", "account_url", "email")]
        if not all(isinstance(value, str) for value in fields):
            return None
        directory, account_url, email = (str(value) for value in fields)
        return StoredAccount(directory=directory, account_url=account_url, email=email)

    def save_account(self, account: StoredAccount) -> None:
        """Store ``account.json`` (0600, atomic)."""
        self.ensure()
        document = {
            "directory": account.directory,
            "account_url": account.account_url,
            "email": account.email,
        }
        _write_atomic(self._file("account.json"), _json_bytes(document))

    # -- certificates ----------------------------------------------------------------------------

    def certificate(self, domain: str) -> StoredCertificate | None:
        """The stored certificate of ``domain``; ``None`` when its directory or ``cert.pem`` is
        missing. Raises ``StorageError`` when it is broken: ``cert.pem`` holds no readable
        certificate, ``key.pem`` is missing, unreadable or not the certificate's key. An
        unreadable ``meta.json`` is tolerated: the validity always comes from the certificate,
        ``issued_at`` then falls back to ``not_before`` and ``directory`` to ``""``."""
        folder = self._file(domain_directory_name(domain))
        pair = _read_pair(folder)
        if pair is None:
            return None
        chain_pem, key_pem = pair
        not_before, not_after = certificate_validity(chain_pem)  # checked by _read_pair
        issued_at, directory = not_before, ""
        try:
            meta = _read_json(os.path.join(folder, "meta.json"))
        except StorageError:
            meta = None
        if meta is not None:
            issued_at = _number(meta.get("issued_at"), issued_at)
            stored_directory = meta.get("directory")
            directory = stored_directory if isinstance(stored_directory, str) else ""
        return StoredCertificate(
            domain=domain,
            cert_pem=chain_pem,
            key_pem=key_pem,
            not_before=not_before,
            not_after=not_after,
            issued_at=issued_at,
            directory=directory,
        )

    def save_certificate(
        self, domain: str, chain_pem: bytes, key_pem: bytes, *, directory: str, issued_at: float
    ) -> StoredCertificate:
        """Store ``domain``'s full chain, key and ``meta.json`` (each atomic, 0600), key first.
        Raises ``StorageError`` (storing nothing) when the chain holds no readable certificate
        or the key is not its key, or when a write fails."""
        folder = self._file(domain_directory_name(domain))
        try:
            not_before, not_after = certificate_validity(chain_pem)
            matches = key_matches(chain_pem, key_pem)
        except ValueError as error:
            raise _fail(folder, f"refusing to store the certificate: {error}") from None
        if not matches:
            raise _fail(folder, "refusing to store the certificate: the key is not its key")
        self.ensure()
        _make_directory(folder)
        _write_atomic(os.path.join(folder, "key.pem"), key_pem)
        _write_atomic(os.path.join(folder, "cert.pem"), chain_pem)
        meta = {
            "domain": domain,
            "not_before": not_before,
            "not_after": not_after,
            "issued_at": issued_at,
            "directory": directory,
        }
        _write_atomic(os.path.join(folder, "meta.json"), _json_bytes(meta))
        return StoredCertificate(
            domain, chain_pem, key_pem, not_before, not_after, issued_at, directory
        )

    # -- HTTP-01 tokens --------------------------------------------------------------------------

    def write_challenge(self, token: str, key_authorization: str) -> None:
        """Store the key authorization of HTTP-01 ``token`` for every replica (atomic, 0600).
        Raises ``ValueError`` for a token that is not base64url (1-128 characters) or a key
        authorization that is not ASCII or longer than ``MAX_CHALLENGE_BYTES``."""
        _check_token(token)
        if not key_authorization.isascii() or len(key_authorization) > MAX_CHALLENGE_BYTES:
            raise ValueError(
                f"an ACME key authorization is ASCII of at most {MAX_CHALLENGE_BYTES} bytes"
            )
        self.ensure()
        folder = self._file(_CHALLENGES)
        _make_directory(folder)
        _write_atomic(os.path.join(folder, token), key_authorization.encode("ascii"))

    def remove_challenge(self, token: str) -> None:
        """Remove ``token``'s file; nothing to remove is fine. ``ValueError`` as for
        ``write_challenge``."""
        _check_token(token)
        _remove(self._file(_CHALLENGES, token))

    def prune_challenges(self, now: float, max_age: float) -> int:
        """Remove the challenge files older than ``max_age`` seconds at Unix time ``now``
        (left by a gateway that stopped mid-order: no longer pending, never to be answered);
        how many went. Files that vanish meanwhile are fine."""
        folder = self._file(_CHALLENGES)
        removed = 0
        try:
            names = os.listdir(folder)
        except OSError:
            return 0
        for name in names:
            path = os.path.join(folder, name)
            try:
                stale = now - os.lstat(path).st_mtime > max_age
            except OSError:
                continue
            if stale:
                _remove(path)
                removed += 1
        return removed

    def fallback(self, now: datetime) -> str:
        """The path of the self-signed fallback pair (key and certificate in one file, so that
        processes making it at the same moment each load a whole pair), made when missing,
        broken, not a matching pair or within a day of its end (SPEC §12.5)."""
        path = self._file("fallback", "pair.pem")
        with contextlib.suppress(StorageError, ValueError):
            data = _read_optional(path, _MAX_CHAIN)
            if data is not None:
                _, not_after = certificate_validity(data)
                if not_after - now.timestamp() > _FALLBACK_MARGIN and key_matches(data, data):
                    return path
        cert_pem, key_pem = fallback_certificate(now)
        self.ensure()
        _make_directory(self._file("fallback"))
        _write_atomic(path, key_pem + cert_pem)
        return path

    # -- the order lock --------------------------------------------------------------------------

    def try_lock(self, owner: str, now: float) -> bool:
        """Take ``.lock`` for ``owner`` at Unix time ``now``: True when ``owner`` holds it
        afterwards (taken now, or already its own, whose ``created`` is then refreshed), False
        while another owner's lock is younger than ``LOCK_STALE_SECONDS``. An older one is
        broken and the create retried (see the module docstring for the races)."""
        self.ensure()
        path = self._file(_LOCK)
        for _ in range(3):
            if _create_lock(path, owner, now):
                return True
            state = _read_lock(path)
            if state is None:
                continue  # released meanwhile: try the create again
            if state.owner == owner:
                _write_atomic(path, _lock_bytes(owner, now))
                return True
            if now - state.created < LOCK_STALE_SECONDS:
                return False
            _capture_lock(self.path, lambda seen: _stale(seen, owner, now))
        return False

    def unlock(self, owner: str) -> None:
        """Remove ``.lock`` if ``owner`` holds it; another owner's lock is left alone."""
        path = self._file(_LOCK)
        state = _read_lock(path)
        if state is not None and state.owner == owner:
            _capture_lock(self.path, lambda seen: seen is None or seen.owner == owner)

    def refresh_lock(self, owner: str, now: float) -> None:
        """Record ``now`` as the lock's ``created`` if ``owner`` holds it (long orders keep it
        from turning stale); otherwise nothing."""
        path = self._file(_LOCK)
        state = _read_lock(path)
        if state is not None and state.owner == owner:
            _write_atomic(path, _lock_bytes(owner, now))


# -- files ---------------------------------------------------------------------------------------


def _fail(path: str, what: str, error: OSError | None = None) -> StorageError:
    reason = f" ({error.strerror})" if error is not None and error.strerror else ""
    return StorageError(f"ACME storage {path}: {what}{reason}")


def _check_token(token: str) -> None:
    if _TOKEN.match(token) is None:
        raise ValueError("an ACME challenge token is 1 to 128 base64url characters")


def _make_directory(path: str) -> None:
    try:
        os.makedirs(path, mode=_DIRECTORY_MODE, exist_ok=True)
        os.chmod(path, _DIRECTORY_MODE)
    except OSError as error:
        raise _fail(path, "cannot create the directory", error) from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) through a temporary file in its directory."""
    folder, name = os.path.split(path)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(temporary, flags, _FILE_MODE)
    except OSError as error:
        raise _fail(path, "cannot write", error) from None
    try:
        try:
            os.fchmod(fd, _FILE_MODE)  # whatever the umask
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise _fail(path, "cannot write", error) from None
    _sync_directory(folder)


def _sync_directory(folder: str) -> None:
    """Make the rename durable; best effort (not every platform opens directories)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder or ".", os.O_RDONLY | _CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_optional(path: str, limit: int, *, follow: bool = True) -> bytes | None:
    """``path``'s bytes, ``None`` when it does not exist; ``StorageError`` when it cannot be
    read or is larger than ``limit`` bytes."""
    flags = os.O_RDONLY | _CLOEXEC | (0 if follow else _NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _fail(path, "cannot read", error) from None
    try:
        chunks: list[bytes] = []
        remaining = limit + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 65536))):
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as error:
        raise _fail(path, "cannot read", error) from None
    finally:
        os.close(fd)
    if remaining <= 0:
        raise _fail(path, f"is larger than {limit} bytes")
    return b"".join(chunks)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise _fail(path, "cannot remove", error) from None


def _json_bytes(document: Mapping[str, object]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _read_json(path: str) -> dict[str, object] | None:
    """A small JSON object file; ``None`` when missing; ``StorageError`` when unreadable or
    not a JSON object (the message says which, never what the file holds)."""
    data = _read_optional(path, _MAX_SMALL_FILE)
    if data is None:
        return None
    try:
        document: object = json.loads(data)
    except ValueError:
        raise _fail(path, "is not valid JSON") from None
    if not isinstance(document, dict):
        raise _fail(path, "is not a JSON object")
    return {str(key): value for key, value in document.items()}


def _number(value: object, default: float) -> float:
    """``value`` as a finite float, else ``default`` (booleans are not numbers here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return default


def _read_pair(folder: str) -> tuple[bytes, bytes] | None:
    """``(cert.pem, key.pem)`` of a domain directory, checked to be a certificate and its key;
    ``None`` without ``cert.pem``. A mismatch is read once more, since a concurrent
    ``save_certificate`` replaces the key before the chain."""
    cert_path, key_path = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    for _ in range(2):
        try:
            chain_pem = _read_optional(cert_path, _MAX_CHAIN)
        except StorageError:
            if not os.path.isdir(folder):
                return None  # a file where the directory should be: nothing stored there
            raise
        if chain_pem is None:
            return None
        key_pem = _read_optional(key_path, _MAX_SMALL_FILE)
        if key_pem is None:
            raise _fail(key_path, "is missing (cert.pem is there)")
        try:
            certificate_validity(chain_pem)
        except ValueError:
            raise _fail(cert_path, "holds no readable certificate") from None
        try:
            if key_matches(chain_pem, key_pem):
                return chain_pem, key_pem
        except ValueError:
            raise _fail(key_path, "holds no readable private key") from None
    raise _fail(key_path, "is not the key of cert.pem")


# -- the lock ------------------------------------------------------------------------------------


def _lock_bytes(owner: str, now: float) -> bytes:
    return _json_bytes({"owner": owner, "created": now})


def _create_lock(path: str, owner: str, now: float) -> bool:
    """Create ``.lock`` exclusively for ``owner``; False when it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _CLOEXEC, _FILE_MODE)
    except FileExistsError:
        return False
    except OSError as error:
        raise _fail(path, "cannot create the lock", error) from None
    try:
        try:
            _write_all(fd, _lock_bytes(owner, now))
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as error:
        _remove(path)
        raise _fail(path, "cannot write the lock", error) from None
    return True


def _read_lock(path: str) -> _LockState | None:
    """What the lock file says; ``None`` when there is none. Unreadable content counts as an
    unknown owner taken at the file's modification time."""
    flags = os.O_RDONLY | _NOFOLLOW | _CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise _fail(path, "cannot read the lock", error) from None
    try:
        modified = os.fstat(fd).st_mtime
        data = os.read(fd, _MAX_SMALL_FILE)
    except OSError as error:
        raise _fail(path, "cannot read the lock", error) from None
    finally:
        os.close(fd)
    try:
        document: object = json.loads(data)
    except ValueError:
        return _LockState(owner=None, created=modified)
    if not isinstance(document, dict):
        return _LockState(owner=None, created=modified)
    owner = document.get("owner")
    return _LockState(
        owner=owner if isinstance(owner, str) else None,
        created=_number(document.get("created"), modified),
    )


def _stale(state: _LockState | None, owner: str, now: float) -> bool:
    return state is None or (state.owner != owner and now - state.created >= LOCK_STALE_SECONDS)


def _capture_lock(root: str, discard: Callable[[_LockState | None], bool]) -> None:
    """Rename ``.lock`` to a private name, then judge what was actually captured: remove it if
    ``discard`` says so, else put it back (a link, which fails rather than replace a lock that
    a third party created meanwhile). Capturing first means no one removes a lock file they
    have not looked at: the check-then-remove race of a plain ``unlink``."""
    path = os.path.join(root, _LOCK)
    captured = os.path.join(root, f"{_LOCK}.{secrets.token_hex(8)}.captured")
    try:
        os.rename(path, captured)
    except FileNotFoundError:
        return  # someone else removed it first
    except OSError as error:
        raise _fail(path, "cannot remove the lock", error) from None
    try:
        if not discard(_read_lock(captured)):
            with contextlib.suppress(FileExistsError):
                os.link(captured, path)
    except OSError as error:
        raise _fail(path, "cannot restore the lock", error) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(captured)
