"""The DNS-01 providers (SPEC §12.2): publish and remove the TXT record
``_acme-challenge.<domain>`` through Cloudflare, Route53, an RFC 2136 nameserver or
pebble-challtestsrv, and wait until a resolver sees it.

Ring 1, blocking: every function and method here blocks its thread, and the ACME code calls
them in worker threads (``trio.to_thread.run_sync``), never on the event loop. Nurseries: none.
Deadlines: every network call has its own timeout (the provider's ``timeout``, 30 s by
default): HTTP calls go through a ``requests.Session`` per provider with ``timeout=`` and no
redirects; DNS exchanges are ``dns.query`` UDP (TCP when truncated) and TCP calls with
``timeout=``. The propagation wait is bounded by ``max_wait`` on an injected clock, each of
its queries by the poll interval.
One provider may serve several worker threads at once: the Cloudflare ids it remembers sit in
a dict touched by single (atomic) operations, and challtestsrv's present and cleanup hold a
lock (its cleanup clears a name and puts the other values back).

- ``build_dns_provider`` makes the provider an ``acme_dns`` block names.
- ``CloudflareProvider``: API v4 ``POST zones/<zone_id>/dns_records`` (bearer token, TTL 120);
  cleanup deletes the record by the id the create returned, or, after a restart, by the ids a
  search by name and content finds.
- ``Route53Provider``: ``ChangeResourceRecordSets`` with ``UPSERT`` then ``DELETE`` of a TXT set
  holding the quoted value (TTL 120), signed with SigV4 (``requests-aws4auth``, us-east-1).
  ``api_token`` is ``ACCESS_KEY_ID:SECRET``. A ``DELETE`` that Route53 refuses because the set
  is gone or holds other values (someone replaced ours) counts as done: ours is gone.
- ``Rfc2136Provider``: finds the zone by SOA queries at ``nameserver``, walking up from the
  record's name, then sends a dynamic update adding (present) or deleting (cleanup) exactly that
  TXT rdata, TSIG-signed when a key is set.
- ``ChallTestSrvProvider``: ``POST /set-txt`` and ``/clear-txt`` of pebble-challtestsrv's
  management API. ``clear-txt`` removes every value of the name, so cleanup puts back the other
  values this provider still holds there.

A wildcard domain (``*.example.com``) uses the record of its base name (RFC 8555 §7.1.3,
§8.4). Names are lower-cased (challtestsrv matches names case-sensitively).

Must not: put a token, secret or TSIG key in a log line, an error message or a repr (every
error message is also scrubbed of the provider's secrets, in case a peer echoes one); follow
redirects; retry (the issuer decides what happens after a failure); run on the event loop.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import quote
from xml.etree import ElementTree

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.update
import msgspec
import requests
from dns.rdtypes.ANY.TXT import TXT
from requests_aws4auth import (  # type: ignore[import-untyped]  # ships no types; used once, below
    AWS4Auth,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema_entrypoints import AcmeDns

log: Final = logging.getLogger("a3s_gateway.acme")

CLOUDFLARE_API: Final = "https://api.cloudflare.com/client/v4"
ROUTE53_API: Final = "https://route53.amazonaws.com"
ROUTE53_REGION: Final = "us-east-1"
CHALLTESTSRV_URL: Final = "http://127.0.0.1:8055"
#: TTL of the records the providers create (SPEC §12.2).
RECORD_TTL: Final = 120
#: Longest peer text (an error body) quoted in an error message.
_DETAIL_LIMIT: Final = 300
_ROUTE53_XMLNS: Final = "https://route53.amazonaws.com/doc/2013-04-01/"
_TSIG_ALGORITHMS: Final[Mapping[str, dns.name.Name]] = {
    "hmac-sha256": dns.tsig.HMAC_SHA256,
    "hmac-sha512": dns.tsig.HMAC_SHA512,
    "hmac-sha1": dns.tsig.HMAC_SHA1,
}


class DnsProviderError(Exception):
    """A DNS provider refused or failed an operation; the message names the provider, the
    operation and the status, never a secret."""


class DnsChallengeProvider(Protocol):
    """What the DNS-01 solver needs of a provider."""

    name: str

    def present(self, domain: str, value: str) -> None:
        """Create TXT ``_acme-challenge.<domain>`` = ``value``."""
        ...

    def cleanup(self, domain: str, value: str) -> None:
        """Remove that record (only that value); a record already gone is no error."""
        ...


def challenge_name(domain: str) -> str:
    """``_acme-challenge.<domain>`` without a trailing dot, lower-case, for ``*.x`` too."""
    base = domain.strip().rstrip(".").lower().removeprefix("*.")
    return f"_acme-challenge.{base}"


def _split_address(text: str) -> tuple[str, int]:
    """``ip:port`` or ``[ipv6]:port`` → (ip, port); an empty host is the loopback."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise DnsProviderError(f"address {text!r} is not ip:port")
    host = host.removeprefix("[").removesuffix("]")
    return host or "127.0.0.1", int(port)


def _scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` cut to ``_DETAIL_LIMIT`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text[:_DETAIL_LIMIT]


# --------------------------------------------------------------------------- HTTP providers


class _Http:
    """One provider's HTTP session: every call bounded, no redirects, errors scrubbed."""

    def __init__(self, provider: str, *, timeout: float, secrets: tuple[str, ...]) -> None:
        self.provider = provider
        self.timeout = timeout
        self.secrets = secrets
        self.session = requests.Session()

    def error(self, operation: str, detail: str) -> DnsProviderError:
        return DnsProviderError(f"{self.provider} {operation}: {_scrub(detail, self.secrets)}")

    def call(
        self,
        operation: str,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Send one request; a transport failure or timeout becomes ``DnsProviderError``."""
        try:
            return self.session.request(
                method,
                url,
                data=body,
                headers=dict(headers or {}),
                params=dict(params or {}),
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.Timeout as exc:
            raise self.error(operation, f"timed out after {self.timeout:g}s") from exc
        except requests.RequestException as exc:
            raise self.error(operation, f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self.session.close()


class _CloudflareMessage(msgspec.Struct):
    code: int = 0
    message: str = ""


class _CloudflareRecord(msgspec.Struct):
    id: str
    content: str = ""


class _CloudflareAnswer(msgspec.Struct):
    success: bool = False
    errors: list[_CloudflareMessage] = []
    result: _CloudflareRecord | list[_CloudflareRecord] | None = None


_CLOUDFLARE_DECODER: Final = msgspec.json.Decoder(_CloudflareAnswer)
_JSON: Final = {"Content-Type": "application/json"}


class CloudflareProvider:
    """Cloudflare API v4 (SPEC §12.2)."""

    name = "cloudflare"

    def __init__(
        self,
        *,
        api_token: str,
        zone_id: str,
        timeout: float = 30.0,
        api_base: str = CLOUDFLARE_API,
    ) -> None:
        self._http = _Http("cloudflare", timeout=timeout, secrets=(api_token,))
        self._http.session.headers["Authorization"] = f"Bearer {api_token}"
        self.zone_id = zone_id
        self._records = f"{api_base.rstrip('/')}/zones/{quote(zone_id, safe='')}/dns_records"
        #: (record name, value) → the id Cloudflare gave the record ``present`` created.
        self._ids: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"CloudflareProvider(zone_id={self.zone_id!r})"

    def close(self) -> None:
        """Close the HTTP session (optional: a dropped provider closes nothing else)."""
        self._http.close()

    def present(self, domain: str, value: str) -> None:
        name = challenge_name(domain)
        body = {"type": "TXT", "name": name, "content": value, "ttl": RECORD_TTL}
        response = self._http.call(
            "present", "POST", self._records, body=json.dumps(body).encode(), headers=_JSON
        )
        result = self._answer("present", response).result
        if not isinstance(result, _CloudflareRecord):
            raise self._http.error("present", f"HTTP {response.status_code}: no record id")
        self._ids[(name, value)] = result.id
        log.debug("dns-01 cloudflare: TXT %s created (record %s)", name, result.id)

    def cleanup(self, domain: str, value: str) -> None:
        name = challenge_name(domain)
        known = self._ids.pop((name, value), None)
        for record_id in [known] if known is not None else self._find(name, value):
            url = f"{self._records}/{quote(record_id, safe='')}"
            response = self._http.call("cleanup", "DELETE", url)
            if response.status_code != 404:  # 404: already gone
                self._answer("cleanup", response)
            log.debug("dns-01 cloudflare: TXT %s removed (record %s)", name, record_id)

    def _find(self, name: str, value: str) -> list[str]:
        """The ids of the TXT records ``name`` whose content is ``value`` (quoted or not)."""
        params = {"type": "TXT", "name": name, "content": value}
        response = self._http.call("cleanup", "GET", self._records, params=params)
        result = self._answer("cleanup", response).result
        records = result if isinstance(result, list) else []
        return [r.id for r in records if r.content.strip('"') == value]

    def _answer(self, operation: str, response: requests.Response) -> _CloudflareAnswer:
        """The decoded answer; an error status or ``success: false`` is ``DnsProviderError``."""
        status = f"HTTP {response.status_code}"
        try:
            answer = _CLOUDFLARE_DECODER.decode(response.content)
        except msgspec.DecodeError:
            raise self._http.error(operation, f"{status}: not a Cloudflare API answer") from None
        if response.status_code // 100 != 2 or not answer.success:
            errors = "; ".join(f"[{e.code}] {e.message}" for e in answer.errors) or "no details"
            raise self._http.error(operation, f"{status}: {errors}")
        return answer


class Route53Provider:
    """Amazon Route53 ``ChangeResourceRecordSets`` (SPEC §12.2)."""

    name = "route53"

    def __init__(
        self,
        *,
        api_token: str,
        zone_id: str,
        timeout: float = 30.0,
        api_base: str = ROUTE53_API,
    ) -> None:
        key_id, sep, secret = api_token.partition(":")
        if not sep or not key_id or not secret:
            raise DnsProviderError("route53: api_token must be ACCESS_KEY_ID:SECRET")
        self._http = _Http("route53", timeout=timeout, secrets=(api_token, secret))
        self._http.session.auth = AWS4Auth(key_id, secret, ROUTE53_REGION, "route53")
        self.zone_id = zone_id.removeprefix("/hostedzone/")
        zone = quote(self.zone_id, safe="")
        self._url = f"{api_base.rstrip('/')}/2013-04-01/hostedzone/{zone}/rrset/"

    def __repr__(self) -> str:
        return f"Route53Provider(zone_id={self.zone_id!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    def present(self, domain: str, value: str) -> None:
        self._change("present", "UPSERT", challenge_name(domain), value)

    def cleanup(self, domain: str, value: str) -> None:
        self._change("cleanup", "DELETE", challenge_name(domain), value)

    def _change(self, operation: str, action: str, name: str, value: str) -> None:
        body = route53_change_batch(action, name + ".", value)
        headers = {"Content-Type": "text/xml"}
        response = self._http.call(operation, "POST", self._url, body=body, headers=headers)
        if response.status_code == 200:
            log.debug("dns-01 route53: %s TXT %s done", action, name)
            return
        text = response.text
        code = _xml_text(text, "Code") or (
            "InvalidChangeBatch" if "InvalidChangeBatch" in text else ""
        )
        message = _xml_text(text, "Message")
        if action == "DELETE" and code == "InvalidChangeBatch" and _gone(message):
            log.debug("dns-01 route53: TXT %s already gone", name)
            return
        detail = f"HTTP {response.status_code}: {code or 'error'}: {message or 'no details'}"
        raise self._http.error(operation, detail)


def route53_change_batch(action: str, fqdn: str, value: str) -> bytes:
    """The XML body of a ``ChangeResourceRecordSets`` call: one ``action`` on the TXT set
    ``fqdn`` holding ``"value"`` (TTL ``RECORD_TTL``)."""
    root = ElementTree.Element("ChangeResourceRecordSetsRequest", xmlns=_ROUTE53_XMLNS)
    batch = ElementTree.SubElement(root, "ChangeBatch")
    ElementTree.SubElement(batch, "Comment").text = "a3s_gateway ACME dns-01"
    change = ElementTree.SubElement(ElementTree.SubElement(batch, "Changes"), "Change")
    ElementTree.SubElement(change, "Action").text = action
    record_set = ElementTree.SubElement(change, "ResourceRecordSet")
    ElementTree.SubElement(record_set, "Name").text = fqdn
    ElementTree.SubElement(record_set, "Type").text = "TXT"
    ElementTree.SubElement(record_set, "TTL").text = str(RECORD_TTL)
    record = ElementTree.SubElement(
        ElementTree.SubElement(record_set, "ResourceRecords"), "ResourceRecord"
    )
    ElementTree.SubElement(record, "Value").text = f'"{value}"'
    encoded: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return encoded


def _xml_text(text: str, tag: str) -> str:
    """The text of the first ``<tag>`` element of an error body ("" when none); read with a
    pattern, not an XML parser: only two short fields are needed from an untrusted body."""
    found = re.search(rf"<{tag}>([^<]*)</{tag}>", text)
    return found.group(1).strip() if found else ""


def _gone(message: str) -> bool:
    """Route53's ``InvalidChangeBatch`` for a DELETE of a set that is not there or no longer
    holds our value."""
    return "not found" in message or "do not match" in message


class ChallTestSrvProvider:
    """pebble-challtestsrv's management API (tests, SPEC §12.6)."""

    name = "challtestsrv"

    def __init__(self, *, management_url: str = CHALLTESTSRV_URL, timeout: float = 30.0) -> None:
        self._http = _Http("challtestsrv", timeout=timeout, secrets=())
        self.management_url = management_url.rstrip("/")
        #: Record name (with the trailing dot) → the values this provider set there.
        self._values: dict[str, list[str]] = {}
        #: Serialises present and cleanup: cleanup clears a name, then restores its others.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ChallTestSrvProvider(management_url={self.management_url!r})"

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    def present(self, domain: str, value: str) -> None:
        host = challenge_name(domain) + "."
        with self._lock:
            self._post("present", "set-txt", {"host": host, "value": value})
            self._values.setdefault(host, []).append(value)

    def cleanup(self, domain: str, value: str) -> None:
        host = challenge_name(domain) + "."
        with self._lock:
            others = list(self._values.get(host, ()))
            if value in others:
                others.remove(value)
            self._post("cleanup", "clear-txt", {"host": host})
            self._values.pop(host, None)
            for other in others:  # clear-txt removed them too: put them back
                self._post("cleanup", "set-txt", {"host": host, "value": other})
                self._values.setdefault(host, []).append(other)

    def _post(self, operation: str, path: str, body: Mapping[str, str]) -> None:
        url = f"{self.management_url}/{path}"
        response = self._http.call(
            operation, "POST", url, body=json.dumps(body).encode(), headers=_JSON
        )
        if response.status_code != 200:
            detail = response.text.strip() or "no details"
            raise self._http.error(operation, f"HTTP {response.status_code}: {detail}")


# --------------------------------------------------------------------------- RFC 2136


class Rfc2136Provider:
    """RFC 2136 dynamic updates to ``nameserver`` (``ip:port``), TSIG-signed when a key is
    set (``tsig_secret`` is base64)."""

    name = "rfc2136"

    def __init__(
        self,
        *,
        nameserver: str,
        tsig_key_name: str | None = None,
        tsig_secret: str | None = None,
        tsig_algorithm: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.nameserver = nameserver
        self.host, self.port = _split_address(nameserver)
        self.timeout = timeout
        self.tsig_key_name = tsig_key_name
        self._secrets = (tsig_secret or "",)
        self._key = _tsig_key(tsig_key_name, tsig_secret, tsig_algorithm or "hmac-sha256")

    def __repr__(self) -> str:
        return (
            f"Rfc2136Provider(nameserver={self.nameserver!r}, tsig_key_name={self.tsig_key_name!r})"
        )

    def present(self, domain: str, value: str) -> None:
        name = dns.name.from_text(challenge_name(domain))
        zone = self.find_zone(name, "present")
        update = self._update(zone)
        update.add(name, RECORD_TTL, _txt(value))
        self._send("present", update)
        log.debug("dns-01 rfc2136: TXT %s added in zone %s", name, zone)

    def cleanup(self, domain: str, value: str) -> None:
        name = dns.name.from_text(challenge_name(domain))
        zone = self.find_zone(name, "cleanup")
        update = self._update(zone)
        update.delete(name, _txt(value))
        self._send("cleanup", update)
        log.debug("dns-01 rfc2136: TXT %s removed from zone %s", name, zone)

    def _error(self, operation: str, detail: str) -> DnsProviderError:
        text = _scrub(f"{detail} (nameserver {self.nameserver})", self._secrets)
        return DnsProviderError(f"rfc2136 {operation}: {text}")

    def find_zone(self, name: dns.name.Name, operation: str = "zone lookup") -> dns.name.Name:
        """The zone holding ``name`` at the nameserver: SOA queries for ``name`` and each
        parent; an answer's SOA owned by the candidate, or an authority SOA above it."""
        candidate = name
        while candidate != dns.name.root:
            response = self._exchange(operation, dns.message.make_query(candidate, "SOA"))
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                for rrset in (*response.answer, *response.authority):
                    if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                        return rrset.name
            candidate = candidate.parent()
        raise self._error(operation, f"no zone at the nameserver holds {name}")

    def _update(self, zone: dns.name.Name) -> dns.update.UpdateMessage:
        update = dns.update.UpdateMessage(zone)
        if self._key is not None:
            update.use_tsig(self._key)
        return update

    def _exchange(self, operation: str, query: dns.message.Message) -> dns.message.Message:
        """One SOA query over UDP (TCP when truncated), bounded by ``timeout``."""
        try:
            response, _ = dns.query.udp_with_fallback(
                query, self.host, port=self.port, timeout=self.timeout
            )
        except dns.exception.Timeout as exc:
            raise self._error(operation, f"SOA query timed out after {self.timeout:g}s") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise self._error(operation, f"SOA query failed: {type(exc).__name__}: {exc}") from exc
        return response

    def _send(self, operation: str, update: dns.update.UpdateMessage) -> None:
        """Send ``update`` over TCP (bounded by ``timeout``) and check the answer's rcode."""
        try:
            response = dns.query.tcp(update, self.host, port=self.port, timeout=self.timeout)
        except dns.exception.Timeout as exc:
            raise self._error(operation, f"update timed out after {self.timeout:g}s") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise self._error(operation, f"update failed: {type(exc).__name__}: {exc}") from exc
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise self._error(operation, f"update refused: {dns.rcode.to_text(rcode)}")


def _tsig_key(name: str | None, secret: str | None, algorithm: str) -> dns.tsig.Key | None:
    """The TSIG key, or None without a key name; a bad secret or algorithm is an error that
    quotes neither the secret nor its decoding error."""
    if name is None:
        return None
    if not secret:
        raise DnsProviderError("rfc2136: tsig_key_name needs tsig_secret")
    known = _TSIG_ALGORITHMS.get(algorithm)
    if known is None:
        raise DnsProviderError(f"rfc2136: unknown tsig_algorithm {algorithm!r}")
    try:
        return dns.tsig.Key(name, secret, known)
    except ValueError:  # binascii.Error included
        raise DnsProviderError("rfc2136: tsig_secret is not valid base64") from None
    except dns.exception.DNSException:
        raise DnsProviderError(f"rfc2136: tsig_key_name {name!r} is not a DNS name") from None


def _txt(value: str) -> TXT:
    """The TXT rdata holding ``value`` as one string (no zone-file quoting involved)."""
    return TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])


# --------------------------------------------------------------------------- building, waiting


def _required(settings: AcmeDns, field: str) -> str:
    value = getattr(settings, field, None)
    text = value if isinstance(value, str) else getattr(value, "text", None)
    if not isinstance(text, str) or not text:
        raise DnsProviderError(f'{settings.provider}: acme_dns field "{field}" is required')
    return text


def build_dns_provider(settings: AcmeDns, *, timeout: float = 30.0) -> DnsChallengeProvider:
    """The provider ``settings.provider`` names, from the ``acme_dns`` block's fields."""
    provider = settings.provider
    if provider == "cloudflare":
        return CloudflareProvider(
            api_token=_required(settings, "api_token"),
            zone_id=_required(settings, "zone_id"),
            timeout=timeout,
        )
    if provider == "route53":
        return Route53Provider(
            api_token=_required(settings, "api_token"),
            zone_id=_required(settings, "zone_id"),
            timeout=timeout,
        )
    if provider == "rfc2136":
        return Rfc2136Provider(
            nameserver=_required(settings, "nameserver"),
            tsig_key_name=settings.tsig_key_name,
            tsig_secret=settings.tsig_secret,
            tsig_algorithm=settings.tsig_algorithm,
            timeout=timeout,
        )
    if provider == "challtestsrv":
        url = settings.management_url.text if settings.management_url else CHALLTESTSRV_URL
        return ChallTestSrvProvider(management_url=url, timeout=timeout)
    raise DnsProviderError(f"unknown dns provider {provider!r}")


def _propagation_resolver(resolver: str | None) -> dns.resolver.Resolver:
    """A resolver asking ``resolver`` (``ip:port``) only, else the system's; no cache."""
    if resolver is None:
        return dns.resolver.Resolver()
    host, port = _split_address(resolver)
    found = dns.resolver.Resolver(configure=False)
    found.nameservers = [host]
    found.port = port
    return found


def _txt_visible(resolver: dns.resolver.Resolver, name: str, value: str, lifetime: float) -> bool:
    """Whether ``resolver`` answers TXT ``name`` with ``value`` among the strings (a value
    split into several strings is joined); no answer, NXDOMAIN or a timeout is ``False``."""
    resolver.timeout = lifetime
    try:
        answer = resolver.resolve(name, "TXT", lifetime=lifetime, search=False)
    except (dns.exception.DNSException, OSError):
        return False
    return any(
        isinstance(rdata, TXT) and b"".join(rdata.strings) == value.encode() for rdata in answer
    )


def wait_for_propagation(
    domain: str,
    value: str,
    *,
    resolver: str | None,
    max_wait: float,
    interval: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Poll TXT ``_acme-challenge.<domain>`` at ``resolver`` (``ip:port``, else the system
    resolver) every ``interval`` until ``value`` is among the answers (True) or ``max_wait``
    has passed on ``clock`` (False). Each query is bounded by ``interval`` (at least 0.5 s)."""
    name = challenge_name(domain) + "."
    try:
        query_resolver = _propagation_resolver(resolver)
    except (dns.exception.DNSException, DnsProviderError) as exc:
        log.warning("dns-01: cannot check propagation of %s: %s", name, exc)
        return False
    deadline = clock() + max_wait
    lifetime = max(interval, 0.5)
    while True:
        if _txt_visible(query_resolver, name, value, lifetime):
            log.debug("dns-01: TXT %s visible", name)
            return True
        remaining = deadline - clock()
        if remaining <= 0:
            log.info("dns-01: TXT %s not visible after %gs", name, max_wait)
            return False
        sleep(min(interval, remaining))
