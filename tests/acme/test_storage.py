"""The ACME directory on disk (``acme/storage.py``; SPEC §12.4): layout, modes, atomic writes,
broken contents, HTTP-01 tokens and the order lock."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from a3s_gateway.acme import storage as storage_module
from a3s_gateway.acme.storage import (
    LOCK_STALE_SECONDS,
    MAX_CHALLENGE_BYTES,
    AcmeStorage,
    StorageError,
    StoredAccount,
    StoredCertificate,
    domain_directory_name,
    read_challenge,
)

START = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
END = datetime(2031, 4, 2, 3, 4, 5, tzinfo=UTC)
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
KEY_AUTHORIZATION = TOKEN + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
DIRECTORY = "https://127.0.0.1:14000/dir"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def issued(ca: trustme.CA, name: str) -> tuple[bytes, bytes]:
    """``(full chain, key)`` for ``name``, valid from START to END."""
    leaf = ca.issue_cert(name, not_before=START, not_after=END)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems) + ca.cert_pem.bytes()
    return chain, leaf.private_key_pem.bytes()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def names(path: Path) -> set[str]:
    return {entry.name for entry in path.iterdir()}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "acme"


@pytest.fixture
def store(root: Path) -> AcmeStorage:
    return AcmeStorage(str(root))


@pytest.fixture(params=[0o000, 0o022, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """Modes must not depend on the umask."""
    value: int = request.param
    previous = os.umask(value)
    try:
        yield value
    finally:
        os.umask(previous)


# -- directory and account -----------------------------------------------------------------------


def test_ensure_creates_parents_and_tightens_an_existing_directory(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "acme"
    AcmeStorage(str(nested)).ensure()
    assert mode(nested) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    AcmeStorage(str(loose)).ensure()
    assert mode(loose) == 0o700


def test_a_directory_that_cannot_be_made_is_a_storage_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot create the directory") as caught:
        AcmeStorage(str(blocker / "acme")).ensure()
    assert str(blocker) in str(caught.value)


def test_the_account_key_round_trips_private(store: AcmeStorage, root: Path, umask: int) -> None:
    assert store.account_key() is None
    store.save_account_key(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    assert store.account_key() == (
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
    )
    assert mode(root) == 0o700
    assert mode(root / "account.key.pem") == 0o600


def test_the_account_round_trips_as_json(store: AcmeStorage, root: Path) -> None:
    assert store.account() is None
    account = StoredAccount(DIRECTORY, "https://127.0.0.1:14000/my-account/1", "ops@example.com")
    store.save_account(account)
    assert store.account() == account
    assert json.loads((root / "account.json").read_bytes()) == {
        "directory": DIRECTORY,
        "account_url": "https://127.0.0.1:14000/my-account/1",
        "email": "ops@example.com",
    }
    assert mode(root / "account.json") == 0o600


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"directory": 1, "account_url": "u", "email": "e"}', b"\xff"],
)
def test_an_unreadable_account_is_none(store: AcmeStorage, root: Path, content: bytes) -> None:
    store.ensure()
    (root / "account.json").write_bytes(content)
    assert store.account() is None


# -- certificates --------------------------------------------------------------------------------


def test_the_certificate_layout_modes_and_meta(
    store: AcmeStorage, root: Path, ca: trustme.CA, umask: int
) -> None:
    chain, key = issued(ca, "www.example.com")
    saved = store.save_certificate(
        "www.example.com", chain, key, directory=DIRECTORY, issued_at=1234.5
    )
    folder = root / "www.example.com"
    assert names(root) == {"www.example.com"}
    assert names(folder) == {"cert.pem", "key.pem", "meta.json"}
    assert mode(root) == mode(folder) == 0o700
    assert mode(folder / "cert.pem") == mode(folder / "key.pem") == 0o600
    assert mode(folder / "meta.json") == 0o600
    assert (folder / "cert.pem").read_bytes() == chain
    assert (folder / "key.pem").read_bytes() == key
    # The validity is the certificate's, whatever the caller believes.
    assert json.loads((folder / "meta.json").read_bytes()) == {
        "domain": "www.example.com",
        "not_before": START.timestamp(),
        "not_after": END.timestamp(),
        "issued_at": 1234.5,
        "directory": DIRECTORY,
    }
    assert saved == StoredCertificate(
        "www.example.com", chain, key, START.timestamp(), END.timestamp(), 1234.5, DIRECTORY
    )
    assert store.certificate("www.example.com") == saved


def test_a_wildcard_is_stored_under_a_wildcard_directory(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    chain, key = issued(ca, "*.example.com")
    store.save_certificate("*.example.com", chain, key, directory=DIRECTORY, issued_at=1.0)
    assert names(root) == {"_wildcard.example.com"}
    stored = store.certificate("*.example.com")
    assert stored is not None
    assert stored.domain == "*.example.com"
    assert stored.cert_pem == chain
    assert store.certificate("example.com") is None


@pytest.mark.parametrize(
    ("domain", "directory"),
    [
        ("*.example.com", "_wildcard.example.com"),
        ("www.example.com", "www.example.com"),
        ("WWW.Example.COM", "www.example.com"),
        ("localhost", "localhost"),
    ],
)
def test_domain_directory_names(domain: str, directory: str) -> None:
    assert domain_directory_name(domain) == directory


@pytest.mark.parametrize(
    "domain",
    ["", ".", "..", "../etc", "a/b", "a\\b", "a..b", "*.*.example.com", "a.*.com", "*", "_w.x"],
)
def test_names_that_could_leave_the_directory_are_refused(domain: str) -> None:
    with pytest.raises(ValueError, match="is not a host name"):
        domain_directory_name(domain)
    with pytest.raises(ValueError, match="is not a host name"):
        AcmeStorage("/nonexistent").certificate(domain)


def test_a_missing_certificate_is_none(store: AcmeStorage, root: Path) -> None:
    assert store.certificate("www.example.com") is None  # no storage at all
    (root / "www.example.com").mkdir(parents=True)
    assert store.certificate("www.example.com") is None  # a directory without cert.pem
    (root / "a.example.com").write_bytes(b"")
    assert store.certificate("a.example.com") is None  # a file where a directory should be


def test_replacing_a_certificate_is_atomic_and_leaves_no_temporary_files(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    first = issued(ca, "www.example.com")
    second = issued(ca, "www.example.com")
    store.save_certificate("www.example.com", *first, directory=DIRECTORY, issued_at=1.0)
    inode = (root / "www.example.com" / "cert.pem").stat().st_ino
    store.save_certificate("www.example.com", *second, directory=DIRECTORY, issued_at=2.0)
    folder = root / "www.example.com"
    assert names(folder) == {"cert.pem", "key.pem", "meta.json"}
    assert folder.joinpath("cert.pem").stat().st_ino != inode  # renamed over, not rewritten
    stored = store.certificate("www.example.com")
    assert stored is not None
    assert (stored.cert_pem, stored.key_pem, stored.issued_at) == (*second, 2.0)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    chain, key = issued(ca, "www.example.com")
    folder = root / "www.example.com"
    (folder / "key.pem" / "occupied").mkdir(parents=True)  # os.replace cannot replace it
    with pytest.raises(StorageError, match="cannot write") as caught:
        store.save_certificate("www.example.com", chain, key, directory=DIRECTORY, issued_at=1.0)
    assert str(folder / "key.pem") in str(caught.value)
    assert names(folder) == {"key.pem"}


def test_a_certificate_and_key_that_do_not_belong_together_are_not_stored(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    chain, _ = issued(ca, "www.example.com")
    _, other_key = issued(ca, "www.example.com")
    with pytest.raises(StorageError, match="the key is not its key"):
        store.save_certificate("www.example.com", chain, other_key, directory="", issued_at=0.0)
    with pytest.raises(StorageError, match="no PEM certificate"):
        store.save_certificate("www.example.com", b"junk", other_key, directory="", issued_at=0.0)
    assert not root.exists()


def write_pair(root: Path, cert: bytes | None, key: bytes | None) -> Path:
    folder = root / "www.example.com"
    folder.mkdir(parents=True)
    if cert is not None:
        (folder / "cert.pem").write_bytes(cert)
    if key is not None:
        (folder / "key.pem").write_bytes(key)
    return folder


def test_a_certificate_that_does_not_parse_is_broken(store: AcmeStorage, root: Path) -> None:
    secret = b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"
    folder = write_pair(root, b"-----BEGIN CERTIFICATE-----\nc2VjcmV0\n", secret)
    with pytest.raises(StorageError, match="holds no readable certificate") as caught:
        store.certificate("www.example.com")
    assert str(folder / "cert.pem") in str(caught.value)
    assert "c2VjcmV0" not in str(caught.value)


def test_a_missing_key_is_broken(store: AcmeStorage, root: Path, ca: trustme.CA) -> None:
    chain, _ = issued(ca, "www.example.com")
    folder = write_pair(root, chain, None)
    with pytest.raises(StorageError, match="is missing") as caught:
        store.certificate("www.example.com")
    assert str(folder / "key.pem") in str(caught.value)


def test_an_unreadable_or_foreign_key_is_broken(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    chain, _ = issued(ca, "www.example.com")
    _, foreign = issued(ca, "www.example.com")
    folder = write_pair(root, chain, b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n")
    with pytest.raises(StorageError, match="no readable private key") as caught:
        store.certificate("www.example.com")
    assert "c2VjcmV0" not in str(caught.value)
    (folder / "key.pem").write_bytes(foreign)
    with pytest.raises(StorageError, match=r"is not the key of cert\.pem"):
        store.certificate("www.example.com")


@pytest.mark.parametrize("meta", [None, b"{broken", b'{"issued_at": "soon", "directory": 7}'])
def test_unreadable_meta_is_recomputed_from_the_certificate(
    store: AcmeStorage, root: Path, ca: trustme.CA, meta: bytes | None
) -> None:
    chain, key = issued(ca, "www.example.com")
    folder = write_pair(root, chain, key)
    if meta is not None:
        (folder / "meta.json").write_bytes(meta)
    assert store.certificate("www.example.com") == StoredCertificate(
        "www.example.com", chain, key, START.timestamp(), END.timestamp(), START.timestamp(), ""
    )


def test_meta_never_overrides_the_certificates_validity(
    store: AcmeStorage, root: Path, ca: trustme.CA
) -> None:
    chain, key = issued(ca, "www.example.com")
    folder = write_pair(root, chain, key)
    meta = {"not_before": 1, "not_after": 2, "issued_at": 3, "directory": DIRECTORY}
    (folder / "meta.json").write_text(json.dumps(meta))
    stored = store.certificate("www.example.com")
    assert stored is not None
    assert (stored.not_before, stored.not_after) == (START.timestamp(), END.timestamp())
    assert (stored.issued_at, stored.directory) == (3.0, DIRECTORY)


def test_the_repr_shows_no_key(ca: trustme.CA) -> None:
    chain, key = issued(ca, "www.example.com")
    stored = StoredCertificate("www.example.com", chain, key, 1.0, 2.0, 3.0, DIRECTORY)
    assert "PRIVATE" not in repr(stored)
    assert "www.example.com" in repr(stored)


# -- HTTP-01 tokens ------------------------------------------------------------------------------


def test_a_challenge_is_written_read_and_removed(
    store: AcmeStorage, root: Path, umask: int
) -> None:
    store.write_challenge(TOKEN, KEY_AUTHORIZATION)
    assert mode(root / "challenges") == 0o700
    assert mode(root / "challenges" / TOKEN) == 0o600
    assert read_challenge(str(root), TOKEN) == KEY_AUTHORIZATION
    assert names(root / "challenges") == {TOKEN}
    store.remove_challenge(TOKEN)
    assert read_challenge(str(root), TOKEN) is None
    store.remove_challenge(TOKEN)  # already gone: fine


def test_reading_without_storage_is_none(tmp_path: Path) -> None:
    assert read_challenge(str(tmp_path / "missing"), TOKEN) is None


BAD_TOKENS = ["", ".", "..", "../account.key.pem", "a/b", "a.b", "t" * 129, "tok\n", "é", "a b"]


@pytest.mark.parametrize("token", BAD_TOKENS)
def test_tokens_outside_base64url_are_refused(store: AcmeStorage, root: Path, token: str) -> None:
    store.save_account_key(b"key")
    assert read_challenge(str(root), token) is None
    assert read_challenge(str(root / "challenges"), token) is None
    with pytest.raises(ValueError, match="base64url"):
        store.write_challenge(token, KEY_AUTHORIZATION)
    with pytest.raises(ValueError, match="base64url"):
        store.remove_challenge(token)


def test_the_longest_token_and_key_authorization_are_accepted(
    store: AcmeStorage, root: Path
) -> None:
    token = "A-_z" * 32
    assert len(token) == 128
    value = "k" * MAX_CHALLENGE_BYTES
    store.write_challenge(token, value)
    assert read_challenge(str(root), token) == value


@pytest.mark.parametrize("value", ["k" * (MAX_CHALLENGE_BYTES + 1), "clé"])
def test_a_key_authorization_too_long_or_not_ascii_is_refused(
    store: AcmeStorage, value: str
) -> None:
    with pytest.raises(ValueError, match="key authorization is ASCII"):
        store.write_challenge(TOKEN, value)


@pytest.mark.parametrize("content", [b"k" * (MAX_CHALLENGE_BYTES + 1), "clé".encode()])
def test_reads_are_bounded_and_ascii(root: Path, content: bytes) -> None:
    (root / "challenges").mkdir(parents=True)
    (root / "challenges" / TOKEN).write_bytes(content)
    assert read_challenge(str(root), TOKEN) is None


def test_a_symbolic_link_at_a_token_is_not_followed(root: Path) -> None:
    (root / "challenges").mkdir(parents=True)
    (root / "secret").write_bytes(b"not for the world")
    (root / "challenges" / TOKEN).symlink_to(root / "secret")
    assert read_challenge(str(root), TOKEN) is None


# -- the lock ------------------------------------------------------------------------------------


def lock_document(root: Path) -> object:
    return json.loads((root / ".lock").read_bytes())


def test_the_lock_is_exclusive_between_two_storages(root: Path) -> None:
    first, second = AcmeStorage(str(root)), AcmeStorage(str(root))
    assert first.try_lock("gateway-a", 1000.0)
    assert lock_document(root) == {"owner": "gateway-a", "created": 1000.0}
    assert mode(root / ".lock") == 0o600
    assert not second.try_lock("gateway-b", 1001.0)
    assert first.try_lock("gateway-a", 1002.0)  # its own: taken again, and refreshed
    assert lock_document(root) == {"owner": "gateway-a", "created": 1002.0}
    second.unlock("gateway-b")  # not its lock: nothing happens
    assert lock_document(root) == {"owner": "gateway-a", "created": 1002.0}
    first.unlock("gateway-a")
    assert not (root / ".lock").exists()
    assert second.try_lock("gateway-b", 1003.0)
    assert names(root) == {".lock"}


def test_unlock_without_a_lock_is_fine(store: AcmeStorage) -> None:
    store.unlock("gateway-a")
    store.ensure()
    store.unlock("gateway-a")


def test_a_lock_turns_stale_after_ten_minutes(root: Path) -> None:
    first, second = AcmeStorage(str(root)), AcmeStorage(str(root))
    assert first.try_lock("gateway-a", 1000.0)
    assert not second.try_lock("gateway-b", 1000.0 + LOCK_STALE_SECONDS - 0.5)
    assert second.try_lock("gateway-b", 1000.0 + LOCK_STALE_SECONDS)
    assert lock_document(root) == {"owner": "gateway-b", "created": 1600.0}
    assert names(root) == {".lock"}  # the broken lock left nothing behind
    assert not first.try_lock("gateway-a", 1601.0)
    first.unlock("gateway-a")  # no longer its lock
    assert lock_document(root) == {"owner": "gateway-b", "created": 1600.0}


def test_refreshing_keeps_a_long_order_locked(root: Path) -> None:
    first, second = AcmeStorage(str(root)), AcmeStorage(str(root))
    assert first.try_lock("gateway-a", 1000.0)
    first.refresh_lock("gateway-a", 1500.0)
    second.refresh_lock("gateway-b", 9999.0)  # not its lock: nothing happens
    assert lock_document(root) == {"owner": "gateway-a", "created": 1500.0}
    assert not second.try_lock("gateway-b", 2000.0)
    assert second.try_lock("gateway-b", 2100.0)


@pytest.mark.parametrize("content", [b"", b"{half", b"[1, 2]", b'{"owner": "x"}'])
def test_an_unreadable_lock_ages_by_its_modification_time(root: Path, content: bytes) -> None:
    store = AcmeStorage(str(root))
    store.ensure()
    (root / ".lock").write_bytes(content)
    os.utime(root / ".lock", (5000.0, 5000.0))
    assert not store.try_lock("gateway-b", 5000.0 + 10.0)
    assert store.try_lock("gateway-b", 5000.0 + LOCK_STALE_SECONDS)
    assert lock_document(root) == {"owner": "gateway-b", "created": 5600.0}


def test_a_lock_retaken_while_being_broken_is_put_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race: gateway-b reads a stale lock, then gateway-a breaks it and takes a fresh one
    before gateway-b acts. gateway-b must not remove gateway-a's fresh lock."""
    first, second = AcmeStorage(str(root)), AcmeStorage(str(root))
    assert first.try_lock("gateway-a", 5000.0)  # the fresh lock already in place
    real_read = storage_module._read_lock
    seen: list[str] = []

    def stale_first(path: str) -> storage_module._LockState | None:
        seen.append(os.path.basename(path))
        if len(seen) == 1:  # what gateway-b read before gateway-a's move
            return storage_module._LockState(owner="gone", created=1000.0)
        return real_read(path)

    monkeypatch.setattr(storage_module, "_read_lock", stale_first)
    assert not second.try_lock("gateway-b", 5000.0)
    assert lock_document(root) == {"owner": "gateway-a", "created": 5000.0}
    assert names(root) == {".lock"}
    assert seen[0] == ".lock"
    assert seen[1].endswith(".captured")  # judged again after capturing it
