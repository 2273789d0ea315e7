"""Semantic checks of an entrypoint's ``tls`` block (SPEC §3.8, §3.15 check 9, §12).

Ring 0: pure. Checks the certificate source (``cert_file``/``key_file`` both or neither, and
some source present), mTLS, ACME (email, challenge and ``acme_dns`` agreement, wildcard domains,
per-provider ``acme_dns`` fields) and ALPN names. Certificate files themselves are read only by
the environment checks (SPEC §3.1 step 6).

Must not: raise, read files, or echo ``api_token``/``tsig_secret`` values.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema_entrypoints import ACME_DNS_FIELD_PROVIDERS, AcmeDns, Tls
from a3s_gateway.config.values import quote_value

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.semantic_report import Report

#: Reserved for the TLS-ALPN-01 challenge (RFC 8737, SPEC §12.2).
ACME_ALPN: Final = "acme-tls/1"
#: ``acme_dns`` fields each provider requires (SPEC §3.8).
_REQUIRED_DNS_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "cloudflare": ("api_token", "zone_id"),
    "route53": ("api_token", "zone_id"),
    "rfc2136": ("nameserver",),
    "challtestsrv": (),
}
#: ACME fields without a default: setting them without ``acme = true`` does nothing.
_ACME_ONLY: Final = ("acme_email", "acme_directory_url", "acme_ca_file", "acme_dns")
_EMAIL: Final = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_DOMAIN: Final = re.compile(
    r"(?:\*\.)?(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"
)
_MAX_ALPN_BYTES: Final = 255


def check_tls(report: Report, base: Path, tls: Tls) -> None:
    """Check one ``tls`` block at ``base`` (``("entrypoints", name, "tls")``)."""
    _check_certificates(report, base, tls)
    if tls.client_auth != "none" and tls.client_ca_file is None:
        report.error(
            (*base, "client_ca_file"),
            f'client_auth "{tls.client_auth}" needs client_ca_file (the CA that signs client '
            "certificates)",
        )
    elif tls.client_auth == "none" and tls.client_ca_file is not None:
        report.error(
            (*base, "client_ca_file"),
            'field "client_ca_file" applies only with client_auth "request" or "require"',
        )
    if tls.acme:
        _check_acme(report, base, tls)
    else:
        for field in _ACME_ONLY:
            if getattr(tls, field, None) is not None:
                report.error((*base, field), f'field "{field}" applies only with acme = true')
        if tls.acme_domains:
            report.error(
                (*base, "acme_domains"), 'field "acme_domains" applies only with acme = true'
            )
    for index, protocol in enumerate(tls.alpn or ()):
        _check_alpn(report, (*base, "alpn", index), protocol)


def _check_certificates(report: Report, base: Path, tls: Tls) -> None:
    has_cert, has_key = tls.cert_file is not None, tls.key_file is not None
    if has_cert and not has_key:
        report.error((*base, "key_file"), "key_file is required with cert_file (both or neither)")
    elif has_key and not has_cert:
        report.error((*base, "cert_file"), "cert_file is required with key_file (both or neither)")
    elif not has_cert and not tls.certificates and not tls.acme:
        report.error(
            base,
            "tls needs a certificate: set cert_file and key_file, certificates, or acme = true",
        )


def _check_acme(report: Report, base: Path, tls: Tls) -> None:
    if tls.acme_email is None or not tls.acme_email:
        report.error((*base, "acme_email"), "acme = true needs acme_email (the ACME account email)")
    elif _EMAIL.fullmatch(tls.acme_email) is None:
        report.error(
            (*base, "acme_email"),
            f"acme_email {quote_value(tls.acme_email)} is invalid: expected an address like "
            '"ops@example.com"',
        )
    dns01 = tls.acme_challenge == "dns-01"
    if dns01 and tls.acme_dns is None:
        report.error((*base, "acme_dns"), 'acme_challenge "dns-01" needs an acme_dns block')
    elif not dns01 and tls.acme_dns is not None:
        report.error(
            (*base, "acme_dns"),
            f'block "acme_dns" applies only to acme_challenge "dns-01" (challenge is '
            f'"{tls.acme_challenge}")',
        )
    for index, domain in enumerate(tls.acme_domains):
        path = (*base, "acme_domains", index)
        if _DOMAIN.fullmatch(domain) is None:
            report.error(
                path,
                f"acme domain {quote_value(domain)} is invalid: expected a host name, "
                'optionally with one leading "*." label',
            )
        elif domain.startswith("*.") and not dns01:
            report.error(
                path,
                f'wildcard domain "{domain}" needs acme_challenge "dns-01" (challenge is '
                f'"{tls.acme_challenge}")',
            )
    if tls.acme_dns is not None and dns01:
        _check_acme_dns(report, (*base, "acme_dns"), tls.acme_dns)


def _check_acme_dns(report: Report, base: Path, dns: AcmeDns) -> None:
    provider = dns.provider
    for field, providers in ACME_DNS_FIELD_PROVIDERS.items():
        if getattr(dns, field, None) is not None and provider not in providers:
            applies = ", ".join(sorted(providers))
            report.error(
                (*base, field),
                f'field "{field}" does not apply to dns provider "{provider}" (applies to: '
                f"{applies})",
            )
    for field in _REQUIRED_DNS_FIELDS.get(provider, ()):
        value = getattr(dns, field, None)
        if value is None or value == "":
            report.error(
                (*base, field), f'field "{field}" is required for dns provider "{provider}"'
            )
    if provider == "rfc2136" and (dns.tsig_key_name is None) != (dns.tsig_secret is None):
        missing = "tsig_secret" if dns.tsig_secret is None else "tsig_key_name"
        report.error(
            (*base, missing), "tsig_key_name and tsig_secret must be set together (both or neither)"
        )


def _check_alpn(report: Report, path: Path, protocol: str) -> None:
    if not protocol:
        report.error(path, "alpn protocol names must not be empty")
    elif protocol == ACME_ALPN:
        report.error(
            path, f'alpn protocol "{ACME_ALPN}" is reserved for the ACME TLS-ALPN-01 challenge'
        )
    elif len(protocol.encode()) > _MAX_ALPN_BYTES:
        report.error(path, "alpn protocol names must be at most 255 bytes")
