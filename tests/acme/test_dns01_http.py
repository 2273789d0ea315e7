"""The Cloudflare and Route53 DNS-01 providers (acme/dns01.py, SPEC §12.2) against local fake
APIs: a plain ``http.server`` on 127.0.0.1 in a thread that records every request and keeps the
records the way the real API would, so a test can check both what was sent (method, path,
headers, body) and what is left after cleanup."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.etree import ElementTree

import pytest

from a3s_gateway.acme.dns01 import (
    CloudflareProvider,
    DnsProviderError,
    Route53Provider,
    route53_change_batch,
)

TOKEN = "cf-token-5d41402abc4b2a76b9719d911017c592"
KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
R53_NS = "{https://route53.amazonaws.com/doc/2013-04-01/}"


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


Respond = Callable[[Seen], Reply]


class FakeApi:
    """A threaded HTTP server answering every request with ``respond(seen)``."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.seen: list[Seen] = []
        self.release = threading.Event()  # lets a stalling handler go at teardown
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                url = urlsplit(self.path)
                seen = Seen(
                    self.command,
                    url.path,
                    parse_qs(url.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    self.rfile.read(length),
                )
                fake.seen.append(seen)
                reply = fake.respond(seen)
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_DELETE = _any  # noqa: N815 -- http.server's names

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"


@contextlib.contextmanager
def fake_api(respond: Respond) -> Iterator[FakeApi]:
    api = FakeApi(respond)
    thread = threading.Thread(target=api.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield api
    finally:
        api.release.set()
        api.server.shutdown()
        api.server.server_close()
        thread.join(timeout=5)


def closed_port_url() -> str:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- Cloudflare fake


class CloudflareFake:
    """Zone ``zone-1``'s ``dns_records`` under ``/client/v4``, kept in ``records``."""

    PREFIX = "/client/v4/zones/zone-1/dns_records"

    def __init__(self) -> None:
        self.records: dict[str, dict[str, object]] = {}
        self._ids = itertools.count(1)

    def __call__(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {TOKEN}":
            return _cf(403, False, errors=[{"code": 9109, "message": "Invalid access token"}])
        if seen.method == "POST" and seen.path == self.PREFIX:
            record = json.loads(seen.body)
            record_id = f"rec{next(self._ids)}"
            self.records[record_id] = record
            return _cf(200, True, result={"id": record_id, **record})
        if seen.method == "GET" and seen.path == self.PREFIX:
            wanted = {k: v[0] for k, v in seen.query.items()}
            found = [
                {"id": rid, **r}
                for rid, r in self.records.items()
                if all(r.get(k) == v for k, v in wanted.items())
            ]
            return _cf(200, True, result=found)
        if seen.method == "DELETE" and seen.path.startswith(self.PREFIX + "/"):
            record_id = seen.path.rpartition("/")[2]
            if self.records.pop(record_id, None) is None:
                return _cf(
                    404, False, errors=[{"code": 81044, "message": "Record does not exist."}]
                )
            return _cf(200, True, result={"id": record_id})
        return _cf(404, False, errors=[{"code": 7003, "message": "No route"}])


def _cf(
    status: int,
    success: bool,
    *,
    result: object = None,
    errors: Sequence[Mapping[str, object]] = (),
) -> Reply:
    body = {"success": success, "errors": list(errors), "messages": [], "result": result}
    return Reply(status, json.dumps(body).encode())


def cloudflare(api: FakeApi, *, timeout: float = 5.0) -> CloudflareProvider:
    return CloudflareProvider(
        api_token=TOKEN, zone_id="zone-1", timeout=timeout, api_base=api.base + "/client/v4"
    )


def test_cloudflare_present_posts_the_record_with_bearer_token() -> None:
    fake = CloudflareFake()
    with fake_api(fake) as api:
        provider = cloudflare(api)
        provider.present("Example.COM", "value-1")
        provider.close()
    (post,) = api.seen
    assert (post.method, post.path) == ("POST", CloudflareFake.PREFIX)
    assert post.headers["authorization"] == f"Bearer {TOKEN}"
    assert post.headers["content-type"] == "application/json"
    assert json.loads(post.body) == {
        "type": "TXT",
        "name": "_acme-challenge.example.com",
        "content": "value-1",
        "ttl": 120,
    }
    assert list(fake.records.values()) == [json.loads(post.body)]


def test_cloudflare_cleanup_deletes_the_record_present_created_by_its_id() -> None:
    fake = CloudflareFake()
    with fake_api(fake) as api:
        provider = cloudflare(api)
        provider.present("example.com", "one")
        provider.present("*.example.com", "two")  # the same name, another value
        provider.cleanup("example.com", "one")
        assert [r["content"] for r in fake.records.values()] == ["two"]
        provider.cleanup("*.example.com", "two")
        provider.close()
    assert fake.records == {}
    assert [(s.method, s.path) for s in api.seen[2:]] == [
        ("DELETE", CloudflareFake.PREFIX + "/rec1"),
        ("DELETE", CloudflareFake.PREFIX + "/rec2"),
    ]


def test_cloudflare_cleanup_without_memory_finds_the_record_by_name_and_content() -> None:
    fake = CloudflareFake()
    with fake_api(fake) as api:
        first = cloudflare(api)
        first.present("example.com", "one")
        first.present("example.com", "other")
        first.close()
        restarted = cloudflare(api)  # a new process: no remembered ids
        restarted.cleanup("example.com", "one")
        restarted.close()
    assert [r["content"] for r in fake.records.values()] == ["other"]
    search, delete = api.seen[2:]
    assert (search.method, search.path) == ("GET", CloudflareFake.PREFIX)
    assert search.query == {
        "type": ["TXT"],
        "name": ["_acme-challenge.example.com"],
        "content": ["one"],
    }
    assert search.headers["authorization"] == f"Bearer {TOKEN}"
    assert (delete.method, delete.path) == ("DELETE", CloudflareFake.PREFIX + "/rec1")


def test_cloudflare_cleanup_of_a_record_already_gone_is_no_error() -> None:
    fake = CloudflareFake()
    with fake_api(fake) as api:
        provider = cloudflare(api)
        provider.present("example.com", "one")
        fake.records.clear()  # removed behind our back
        provider.cleanup("example.com", "one")  # DELETE answers 404
        provider.cleanup("example.com", "never-created")  # the search finds nothing
        provider.close()
    assert [s.method for s in api.seen] == ["POST", "DELETE", "GET"]


def test_cloudflare_api_errors_name_provider_operation_and_status_not_the_token() -> None:
    def refuse(seen: Seen) -> Reply:
        message = f"Invalid access token {TOKEN}"  # a peer echoing the token
        return _cf(403, False, errors=[{"code": 9109, "message": message}])

    with fake_api(refuse) as api:
        provider = cloudflare(api)
        with pytest.raises(DnsProviderError) as caught:
            provider.present("example.com", "one")
        provider.close()
    text = str(caught.value)
    assert text.startswith("cloudflare present: HTTP 403: [9109] Invalid access token")
    assert TOKEN not in text
    assert TOKEN not in repr(provider)
    assert TOKEN not in repr(caught.value)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(200, b"<html>proxy</html>", "text/html"), "HTTP 200: not a Cloudflare API answer"),
        (Reply(500, b"{}"), "HTTP 500: no details"),
        (Reply(200, b'{"success": true, "result": null}'), "HTTP 200: no record id"),
        (Reply(302, b"", headers={"Location": "http://127.0.0.1:1/"}), "HTTP 302"),
    ],
)
def test_cloudflare_answers_that_are_not_a_created_record_are_errors(
    reply: Reply, expected: str
) -> None:
    with fake_api(lambda seen: reply) as api:
        provider = cloudflare(api)
        with pytest.raises(DnsProviderError, match=re.escape(f"cloudflare present: {expected}")):
            provider.present("example.com", "one")
        provider.close()
    assert len(api.seen) == 1  # the redirect was not followed


def test_cloudflare_timeout_and_refused_connection_are_provider_errors() -> None:
    def stall(seen: Seen) -> Reply:
        api.release.wait(5)
        return Reply(200, b"{}")

    with fake_api(stall) as api:
        provider = cloudflare(api, timeout=0.2)
        with pytest.raises(DnsProviderError, match=r"^cloudflare cleanup: timed out after 0.2s$"):
            provider.cleanup("example.com", "one")
        provider.close()
    refused = CloudflareProvider(
        api_token=TOKEN, zone_id="zone-1", timeout=2, api_base=closed_port_url()
    )
    with pytest.raises(DnsProviderError, match=r"^cloudflare present: ConnectionError") as caught:
        refused.present("example.com", "one")
    assert TOKEN not in str(caught.value)
    refused.close()


# --------------------------------------------------------------------------- Route53 fake

ROUTE53_PATH = "/2013-04-01/hostedzone/Z0123/rrset/"
SCOPE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/(\d{8})/us-east-1/route53/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$"
)


def _change(body: bytes) -> tuple[str, str, str, str, list[str]]:
    """(action, name, type, ttl, values) of a one-change ``ChangeResourceRecordSets`` body."""
    root = ElementTree.fromstring(body)
    assert root.tag == f"{R53_NS}ChangeResourceRecordSetsRequest"
    (change,) = root.iterfind(f"{R53_NS}ChangeBatch/{R53_NS}Changes/{R53_NS}Change")
    record_set = change.find(f"{R53_NS}ResourceRecordSet")
    assert record_set is not None

    def text(element: ElementTree.Element, tag: str) -> str:
        found = element.find(f"{R53_NS}{tag}")
        assert found is not None
        assert found.text is not None
        return found.text

    values = [
        v.text or ""
        for v in record_set.iterfind(
            f"{R53_NS}ResourceRecords/{R53_NS}ResourceRecord/{R53_NS}Value"
        )
    ]
    action = text(change, "Action")
    return (
        action,
        text(record_set, "Name"),
        text(record_set, "Type"),
        text(record_set, "TTL"),
        values,
    )


def _r53_error(status: int, code: str, message: str) -> Reply:
    body = (
        '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/'
        f'2013-04-01/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}'
        "</Message></Error><RequestId>r-1</RequestId></ErrorResponse>"
    )
    return Reply(status, body.encode(), "text/xml")


def _invalid_batch(message: str) -> Reply:
    body = (
        '<?xml version="1.0"?>\n<InvalidChangeBatch xmlns="https://route53.amazonaws.com/doc/'
        f'2013-04-01/"><Messages><Message>{message}</Message></Messages></InvalidChangeBatch>'
    )
    return Reply(400, body.encode(), "text/xml")


class Route53Fake:
    """Hosted zone ``Z0123``'s record sets in ``sets`` (name → values)."""

    def __init__(self) -> None:
        self.sets: dict[str, list[str]] = {}

    def __call__(self, seen: Seen) -> Reply:
        if seen.method != "POST" or seen.path != ROUTE53_PATH:
            return _r53_error(404, "NoSuchHostedZone", "No hosted zone found")
        if not SCOPE.match(seen.headers.get("authorization", "")):
            return _r53_error(403, "IncompleteSignature", "bad authorization")
        action, name, _, _, values = _change(seen.body)
        if action == "UPSERT":
            self.sets[name] = values
        elif self.sets.get(name) != values:
            what = "not found" if name not in self.sets else "values provided do not match"
            return _invalid_batch(
                f"Tried to delete resource record set [name='{name}', type='TXT'] but {what}"
            )
        else:
            del self.sets[name]
        body = (
            '<?xml version="1.0"?>\n<ChangeResourceRecordSetsResponse><ChangeInfo><Id>/change/C1'
            "</Id><Status>PENDING</Status></ChangeInfo></ChangeResourceRecordSetsResponse>"
        )
        return Reply(200, body.encode(), "text/xml")


def route53(api: FakeApi, *, timeout: float = 5.0, zone_id: str = "Z0123") -> Route53Provider:
    return Route53Provider(
        api_token=f"{KEY_ID}:{AWS_SECRET}", zone_id=zone_id, timeout=timeout, api_base=api.base
    )


def test_route53_present_upserts_the_quoted_value_signed_with_sigv4() -> None:
    fake = Route53Fake()
    with fake_api(fake) as api:
        provider = route53(api, zone_id="/hostedzone/Z0123")  # the console's form too
        provider.present("*.Example.com.", "value-1")
        provider.close()
    (post,) = api.seen
    assert (post.method, post.path) == ("POST", ROUTE53_PATH)
    assert post.headers["content-type"] == "text/xml"
    assert _change(post.body) == (
        "UPSERT",
        "_acme-challenge.example.com.",
        "TXT",
        "120",
        ['"value-1"'],
    )
    signed = SCOPE.match(post.headers["authorization"])
    assert signed is not None
    assert re.fullmatch(r"\d{8}T\d{6}Z", post.headers["x-amz-date"])
    assert signed.group(1) == post.headers["x-amz-date"][:8]
    assert {"host", "x-amz-date", "content-type"} <= set(signed.group(2).split(";"))
    assert post.headers["x-amz-content-sha256"] == hashlib.sha256(post.body).hexdigest()
    assert fake.sets == {"_acme-challenge.example.com.": ['"value-1"']}


def test_route53_cleanup_deletes_exactly_what_present_created() -> None:
    fake = Route53Fake()
    with fake_api(fake) as api:
        provider = route53(api)
        provider.present("example.com", "value-1")
        fake.sets["_acme-challenge.other.com."] = ['"keep"']
        provider.cleanup("example.com", "value-1")
        provider.close()
    assert fake.sets == {"_acme-challenge.other.com.": ['"keep"']}
    delete = api.seen[-1]
    assert _change(delete.body) == (
        "DELETE",
        "_acme-challenge.example.com.",
        "TXT",
        "120",
        ['"value-1"'],
    )
    assert SCOPE.match(delete.headers["authorization"])


def test_route53_cleanup_of_a_set_gone_or_replaced_is_no_error() -> None:
    fake = Route53Fake()
    with fake_api(fake) as api:
        provider = route53(api)
        provider.cleanup("example.com", "never-created")  # "... but it was not found"
        fake.sets["_acme-challenge.example.com."] = ['"someone-else"']
        provider.cleanup("example.com", "mine")  # "... values provided do not match"
        provider.close()
    assert fake.sets == {"_acme-challenge.example.com.": ['"someone-else"']}
    assert [s.method for s in api.seen] == ["POST", "POST"]


def test_route53_errors_name_provider_operation_status_and_code_never_the_secret() -> None:
    def refuse(seen: Seen) -> Reply:
        return _r53_error(403, "SignatureDoesNotMatch", f"secret {AWS_SECRET} is wrong")

    with fake_api(refuse) as api:
        provider = route53(api)
        with pytest.raises(DnsProviderError) as caught:
            provider.present("example.com", "one")
        with pytest.raises(DnsProviderError, match=r"^route53 cleanup: HTTP 403"):
            provider.cleanup("example.com", "one")
        provider.close()
    text = str(caught.value)
    assert text.startswith("route53 present: HTTP 403: SignatureDoesNotMatch: secret ***")
    assert AWS_SECRET not in text
    assert AWS_SECRET not in repr(provider)
    assert KEY_ID not in repr(provider)
    assert repr(provider) == "Route53Provider(zone_id='Z0123')"


def test_route53_invalid_change_batch_on_upsert_is_an_error() -> None:
    with fake_api(
        lambda seen: _invalid_batch("RRSet of type TXT with DNS name x is not permitted")
    ) as api:
        provider = route53(api)
        with pytest.raises(
            DnsProviderError,
            match=r"^route53 present: HTTP 400: InvalidChangeBatch: RRSet of type TXT",
        ):
            provider.present("example.com", "one")
        provider.close()


def test_route53_timeout_is_a_provider_error() -> None:
    def stall(seen: Seen) -> Reply:
        api.release.wait(5)
        return Reply(200)

    with fake_api(stall) as api:
        provider = route53(api, timeout=0.2)
        with pytest.raises(DnsProviderError, match=r"^route53 present: timed out after 0.2s$"):
            provider.present("example.com", "one")
        provider.close()


@pytest.mark.parametrize("token", ["no-colon", ":secret", "key:", ""])
def test_route53_token_must_be_key_id_colon_secret(token: str) -> None:
    with pytest.raises(DnsProviderError, match="api_token must be ACCESS_KEY_ID:SECRET") as caught:
        Route53Provider(api_token=token, zone_id="Z1")
    assert "secret" not in str(caught.value).replace("SECRET", "")


def test_route53_change_batch_escapes_the_value() -> None:
    body = route53_change_batch("UPSERT", "_acme-challenge.x.", "a<b&c")
    assert body.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    assert _change(body) == ("UPSERT", "_acme-challenge.x.", "TXT", "120", ['"a<b&c"'])


def test_no_secret_in_any_log_record(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with fake_api(CloudflareFake()) as cf_api, fake_api(Route53Fake()) as r53_api:
        cf = cloudflare(cf_api)
        r53 = route53(r53_api)
        for provider in (cf, r53):
            provider.present("example.com", "one")
            provider.cleanup("example.com", "one")
        cf.close()
        r53.close()
    assert any(r.name == "a3s_gateway.acme" for r in caplog.records), "debug lines expected"
    for record in caplog.records:
        text = record.getMessage()
        assert TOKEN not in text
        assert AWS_SECRET not in text
