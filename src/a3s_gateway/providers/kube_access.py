"""How the Kubernetes provider reaches the API server (SPEC §10.6): where it is and how to
authenticate, read once from the settings (``load_access``) into an ``ApiAccess`` that every
call of the HTTPS client (``kube_api.KubeClient``) uses.

Where the API server is, in this order:

- ``kubeconfig`` set: that file (YAML). Its ``current-context`` names a cluster (``server``,
  ``certificate-authority`` or ``certificate-authority-data``, ``insecure-skip-tls-verify``,
  ``tls-server-name``) and a user (``token``, ``tokenFile``, ``client-certificate[-data]`` with
  ``client-key[-data]``). Relative paths are relative to the file's directory, as kubectl
  reads them. ``exec`` and ``auth-provider`` users (cloud plugins), basic auth and
  ``proxy-url`` are refused with an error naming them, and so is ``insecure-skip-tls-verify``
  together with a certificate authority (as kubectl refuses it). A ``-data`` field's base64 may
  hold line breaks and blanks (ignored, as kubectl ignores them). A certificate or key given as
  ``-data`` is written to a private temporary file (``mkstemp``: mode 0600) only for as long
  as ``ssl`` takes to load it, then removed. ``api_server``, when also set, replaces the
  cluster's ``server`` (kubectl's ``--server``).
- ``api_server`` set: that URL; the service account's token and ``ca.crt`` are used when the
  files exist (else no authentication and the system's trust store).
- otherwise in-cluster: ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`` with the
  service account's ``token`` and ``ca.crt``.

A token file (the service account's, a kubeconfig ``tokenFile``) is read again at every
request (``ApiAccess.bearer``), so rotated (projected) tokens work. The bearer token travels
over https only, except a kubeconfig that pairs a token with an ``http://`` server: the
operator wrote both. (The service account's token never goes to an ``http://`` ``api_server``
such as ``kubectl proxy``, which authenticates itself.)

Ring 1. Nurseries: none. Deadlines: none of its own (it reads local files; the calls' deadlines
are ``kube_api``'s). Errors are ``kube_api.KubeApiError``: one line, naming the setting or the
file (and the kubeconfig context) at fault.

Must not: block the event loop (``load_access`` reads files and builds an ``SSLContext``: call
it in a thread; ``ApiAccess.bearer`` reads through trio), leave a certificate or key from a
``-data`` field on disk once ``ssl`` has loaded it, or put a token or key in any message, repr
or log line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import trio
import yaml

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.providers.kube_api import KubeApiError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from a3s_gateway.config.schema import KubernetesProvider

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ApiAccess",
    "ApiServer",
    "load_access",
]

#: Where a pod finds its service account's token and CA certificate.
SERVICE_ACCOUNT_DIR: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_REFUSED_USER_FIELDS: Final = {
    "exec": "exec credential plugins",
    "auth-provider": "auth-provider plugins",
    "username": "basic authentication",
    "password": "basic authentication",
}


# -- where and how ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiServer:
    """The API server's scheme, host (an IPv6 address without brackets), port, and a path
    prefix without a trailing ``/`` (possibly empty)."""

    scheme: Literal["http", "https"]
    host: str
    port: int
    prefix: str = ""

    @classmethod
    def parse(cls, text: str, what: str) -> ApiServer:
        """``text`` as an ``http``/``https`` URL. Raises ``KubeApiError`` naming ``what``."""
        try:
            url = HttpUrl(text.strip())
        except ValueError as error:
            raise KubeApiError(f"{what}: {error}") from None
        scheme: Literal["http", "https"] = "https" if url.scheme == "https" else "http"
        return cls(scheme, url.host, url.port, url.target.partition("?")[0].rstrip("/"))

    @property
    def authority(self) -> str:
        """The ``Host`` header: the port only when it is not the scheme's default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.prefix}"


@dataclass(frozen=True, slots=True)
class ApiAccess:
    """Everything a request needs: the server, TLS, credentials, and ``source`` (how it was
    found, for ``/providers``: ``in-cluster``, ``kubeconfig <path> (context <name>)`` or
    ``api_server``). The token never shows in ``repr``."""

    server: ApiServer
    source: str
    context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    token: str | None = field(default=None, repr=False)
    token_file: Path | None = None
    #: Whether the token file must exist (a kubeconfig ``tokenFile``) or is optional (the
    #: service account's, absent outside a pod).
    token_required: bool = False
    #: The operator paired a token with an ``http://`` server (kubeconfig): send it anyway.
    token_over_http: bool = False
    #: TLS verification is off (``insecure-skip-tls-verify``): worth a warning.
    insecure: bool = False

    async def bearer(self) -> str | None:
        """The token for the next request, the file read now; None when there is none or the
        server is plain http. Raises ``KubeApiError`` for an unreadable or empty token file."""
        if self.server.scheme == "http" and not self.token_over_http:
            return None
        if self.token is not None:
            return self.token
        path = self.token_file
        if path is None:
            return None
        try:
            token = (await trio.Path(path).read_text(encoding="utf-8")).strip()
        except FileNotFoundError:
            if not self.token_required:
                return None
            raise KubeApiError(f"token file {path} does not exist") from None
        except (OSError, UnicodeDecodeError) as error:
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise KubeApiError(f"token file {path}: {reason}") from None
        if not token:
            raise KubeApiError(f"token file {path} is empty")
        return token


def load_access(
    settings: KubernetesProvider,
    *,
    service_account_dir: Path = SERVICE_ACCOUNT_DIR,
    environ: Mapping[str, str],
) -> ApiAccess:
    """Where the API server is and how to authenticate, from ``settings`` (see the module
    docstring). Blocking (reads files, builds an ``SSLContext``): run it in a thread. Raises
    ``KubeApiError``."""
    if settings.kubeconfig:
        path = Path(settings.kubeconfig).expanduser()
        return _from_kubeconfig(path, settings.api_server.strip())
    token_file = service_account_dir / "token"
    ca_file = service_account_dir / "ca.crt"
    if settings.api_server.strip():
        server = ApiServer.parse(settings.api_server, "providers.kubernetes.api_server")
        source = "api_server"
    else:
        server = _in_cluster_server(environ)
        source = "in-cluster"
    context = None
    if server.scheme == "https":
        context = _verifying_context(ca_file if ca_file.is_file() else None, None, what=source)
    return ApiAccess(
        server=server,
        source=source,
        context=context,
        server_hostname=server.host,
        token_file=token_file,
    )


def _in_cluster_server(environ: Mapping[str, str]) -> ApiServer:
    host = environ.get("KUBERNETES_SERVICE_HOST", "").strip().strip("[]")
    if not host:
        raise KubeApiError(
            "no API server: KUBERNETES_SERVICE_HOST is unset (not in a pod); set "
            "providers.kubernetes.kubeconfig or api_server"
        )
    port = environ.get("KUBERNETES_SERVICE_PORT", "").strip() or "443"
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise KubeApiError(f"KUBERNETES_SERVICE_PORT {port!r} is not a port")
    return ApiServer("https", host, int(port))


def _verifying_context(ca_file: Path | None, ca_data: bytes | None, *, what: str) -> ssl.SSLContext:
    """A client context trusting ``ca_file`` or ``ca_data`` (the system's store when both are
    None). Raises ``KubeApiError``."""
    try:
        if ca_data is not None:
            return ssl.create_default_context(cadata=ca_data.decode("ascii"))
        return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
    except (OSError, ValueError) as error:  # (ssl.SSLError is an OSError)
        where = f"CA file {ca_file}" if ca_file is not None else "certificate-authority-data"
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise KubeApiError(f"{what}: {where}: {reason}") from None


# -- kubeconfig ------------------------------------------------------------------------------


def _from_kubeconfig(path: Path, api_server: str) -> ApiAccess:
    what = f"kubeconfig {path}"
    try:
        document: object = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise KubeApiError(f"{what}: {error.strerror or type(error).__name__}") from None
    except (UnicodeDecodeError, yaml.YAMLError):
        raise KubeApiError(f"{what}: not a valid YAML file") from None
    config = _mapping(document, what)
    context_name = config.get("current-context")
    if not isinstance(context_name, str) or not context_name:
        raise KubeApiError(f"{what}: no current-context")
    what = f"{what} (context {context_name})"
    context = _named(config, "contexts", context_name, "context", what)
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not isinstance(cluster_name, str):
        raise KubeApiError(f"{what}: the context names no cluster")
    cluster = _named(config, "clusters", cluster_name, "cluster", what)
    user: Mapping[str, object] = {}
    if isinstance(user_name, str) and user_name:
        user = _named(config, "users", user_name, "user", what)
    for key, name in _REFUSED_USER_FIELDS.items():
        if user.get(key) is not None:
            raise KubeApiError(f"{what}: user {user_name}: {name} ({key}) are not supported")
    base = path.parent
    server = _cluster_server(cluster, api_server, what)
    access = ApiAccess(server=server, source=what, server_hostname=server.host)
    access = _with_token(access, user, base, what)
    if server.scheme == "https":
        access = _with_tls(access, cluster, user, base, what)
    return access


def _mapping(value: object, what: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise KubeApiError(f"{what}: expected a mapping")
    return {str(key): item for key, item in value.items()}


def _named(
    config: Mapping[str, object], section: str, name: str, body: str, what: str
) -> Mapping[str, object]:
    """The ``body`` mapping of the entry called ``name`` in the list ``section``."""
    entries = config.get(section)
    for entry in entries if isinstance(entries, list) else ():
        if isinstance(entry, dict) and entry.get("name") == name:
            return _mapping(entry.get(body) or {}, f"{what}: {section} {name}")
    raise KubeApiError(f"{what}: {section[:-1]} {name!r} is not defined")


def _cluster_server(cluster: Mapping[str, object], api_server: str, what: str) -> ApiServer:
    if cluster.get("proxy-url"):
        raise KubeApiError(f"{what}: proxy-url is not supported")
    if api_server:
        return ApiServer.parse(api_server, "providers.kubernetes.api_server")
    text = cluster.get("server")
    if not isinstance(text, str) or not text:
        raise KubeApiError(f"{what}: the cluster has no server")
    return ApiServer.parse(text, f"{what}: server")


def _with_token(access: ApiAccess, user: Mapping[str, object], base: Path, what: str) -> ApiAccess:
    token, token_file = user.get("token"), user.get("tokenFile")
    over_http = access.server.scheme == "http"
    if isinstance(token, str) and token.strip():
        return dataclasses.replace(access, token=token.strip(), token_over_http=over_http)
    if isinstance(token_file, str) and token_file:
        return dataclasses.replace(
            access,
            token_file=base / Path(token_file).expanduser(),
            token_required=True,
            token_over_http=over_http,
        )
    if token is not None or token_file is not None:
        raise KubeApiError(f"{what}: the user's token or tokenFile is empty or not a string")
    return access


def _with_tls(
    access: ApiAccess,
    cluster: Mapping[str, object],
    user: Mapping[str, object],
    base: Path,
    what: str,
) -> ApiAccess:
    insecure = cluster.get("insecure-skip-tls-verify") is True
    ca_file = _file_field(cluster, "certificate-authority", base)
    ca_data = _data_field(cluster, "certificate-authority-data", what)
    if insecure and (ca_file is not None or ca_data is not None):
        raise KubeApiError(
            f"{what}: the cluster sets insecure-skip-tls-verify and a certificate authority; "
            "a CA cannot be trusted while verification is off (kubectl refuses this too): "
            "keep one of them"
        )
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = _verifying_context(ca_file, ca_data, what=what)
    _load_client_pair(context, user, base, what)
    server_name = cluster.get("tls-server-name")
    hostname = server_name if isinstance(server_name, str) and server_name else None
    return dataclasses.replace(
        access,
        context=context,
        server_hostname=hostname or access.server.host,
        insecure=insecure,
    )


def _file_field(section: Mapping[str, object], key: str, base: Path) -> Path | None:
    value = section.get(key)
    return base / Path(value).expanduser() if isinstance(value, str) and value else None


def _data_field(section: Mapping[str, object], key: str, what: str) -> bytes | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise KubeApiError(f"{what}: {key} is not a string")
    try:
        # (line breaks and blanks inside the base64 are ignored, as kubectl reads them)
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise KubeApiError(f"{what}: {key} is not valid base64") from None


def _load_client_pair(
    context: ssl.SSLContext, user: Mapping[str, object], base: Path, what: str
) -> None:
    """Client-certificate authentication, when the user has a certificate and a key."""
    cert_file = _file_field(user, "client-certificate", base)
    cert_data = _data_field(user, "client-certificate-data", what)
    key_file = _file_field(user, "client-key", base)
    key_data = _data_field(user, "client-key-data", what)
    has_cert = cert_file is not None or cert_data is not None
    has_key = key_file is not None or key_data is not None
    if not has_cert and not has_key:
        return
    if not (has_cert and has_key):
        raise KubeApiError(f"{what}: the user has a client certificate or key without the other")
    with _as_file(cert_file, cert_data) as cert_path, _as_file(key_file, key_data) as key_path:
        try:
            context.load_cert_chain(str(cert_path), str(key_path))
        except (OSError, ValueError) as error:
            # (never quote the file's content; ssl's messages name reasons, not bytes)
            reason = getattr(error, "strerror", None) or type(error).__name__
            raise KubeApiError(f"{what}: the client certificate or key: {reason}") from None


@contextlib.contextmanager
def _as_file(path: Path | None, data: bytes | None) -> Iterator[Path]:
    """``path``, or ``data`` in a private temporary file (0600) removed on exit."""
    if data is None:
        assert path is not None
        yield path
        return
    handle, name = tempfile.mkstemp(prefix="a3s-kube-", suffix=".pem")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)
