"""Outbound HTTP to URLs that callers chose (image URLs, webhooks), without SSRF.

The rules, in one place:

- ``http`` and ``https`` only; no user:password in the URL; a port in 1-65535.
- The host is resolved and *every* address it resolves to must be public (global unicast):
  no loopback, private, link-local, carrier-grade NAT, unspecified, multicast, broadcast,
  reserved or documentation ranges, no cloud metadata endpoint, and the same for IPv6 and for
  IPv4 addresses embedded in IPv6 (``::ffff:127.0.0.1``, 6to4, NAT64).
- Numeric hosts other than a plain dotted quad (``2130706433``, ``0x7f.1``, ``0177.0.0.1``,
  ``127.1``) are refused outright: resolvers read them as addresses, people do not.
- The connection goes to the address that was checked (it is pinned in the transport), so a
  DNS answer that changes between the check and the connect (rebinding) cannot win.
- Redirects are followed by hand, each hop checked again, at most ``MAX_REDIRECTS``.
- Timeouts on every network step, an overall deadline, and a byte cap counted while
  streaming (Content-Length is not trusted); compressed bodies are not asked for.

``allow_private`` (``settings.webhook_allow_private``; off by default) lets tests and closed
networks reach loopback and private ranges. Metadata endpoints, unspecified, multicast and
reserved addresses stay refused even then.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

__all__ = [
    "MAX_REDIRECTS",
    "FetchError",
    "FetchResult",
    "NetGuardError",
    "PostResult",
    "ResponseTooLarge",
    "Target",
    "UnsafeUrlError",
    "check_address",
    "check_url",
    "fetch",
    "post",
    "vet_url",
]

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 3
MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT = 5.0  # seconds for a host name to resolve
# Lookups run here so a slow resolver cannot hold a caller past its deadline; a few threads
# bound what hanging lookups can tie up.
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                  thread_name_prefix="netguard-dns")
USER_AGENT = "spec2fractal"
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata services: never reachable, whatever allow_private says.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, ...
                      ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
                      ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
                      ipaddress.ip_address("fd00:ec2::254")})  # AWS over IPv6
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # well-known prefix: the low 32 bits are IPv4
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215)
# Ranges that may be reached only with allow_private.
_PRIVATE_V4 = [ipaddress.ip_network(net) for net in (
    "10.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10")]
_PRIVATE_V6 = [ipaddress.ip_network(net) for net in ("::1/128", "fc00::/7", "fe80::/10")]


class NetGuardError(Exception):
    """Base of this module's errors; the message is safe to show to the caller."""


class UnsafeUrlError(NetGuardError):
    """The URL breaks the address rules (scheme, userinfo, a non-public address, ...)."""


class FetchError(NetGuardError):
    """The URL was allowed but the fetch failed: unreachable, timeout, bad status, ..."""


class ResponseTooLarge(FetchError):
    """The response passed the byte cap."""


@dataclass(frozen=True)
class Target:
    """A checked URL and the one address the connection will go to."""

    url: httpx.URL
    host: str
    port: int
    address: str


@dataclass(frozen=True)
class PostResult:
    status: int
    retry_after: str | None  # the receiver's Retry-After header, if any


@dataclass(frozen=True)
class FetchResult:
    url: str  # after redirects
    status: int
    content_type: str
    content: bytes


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for: mapped, 6to4, NAT64, IPv4-compatible."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_address(address: IPAddress, *, allow_private: bool = False) -> None:
    """Raise UnsafeUrlError unless ``address`` may be connected to."""
    if address in METADATA:
        raise UnsafeUrlError(f"address {address} is a cloud metadata endpoint")
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            raise UnsafeUrlError(f"address {address} has a zone id")
        inner = _embedded_v4(address)
        if inner is not None:
            try:
                check_address(inner, allow_private=allow_private)
            except UnsafeUrlError as exc:
                raise UnsafeUrlError(f"address {address} embeds IPv4 {inner}: "
                                     f"{exc}") from None
            return
        if address in NAT64_LOCAL:
            raise UnsafeUrlError(f"address {address} is a local-use NAT64 address")
    if address.is_unspecified or address.is_multicast:
        raise UnsafeUrlError(f"address {address} is unspecified or multicast")
    if address.is_global and not (address.is_reserved or address.is_loopback
                                  or address.is_link_local or address.is_private
                                  or address in CGNAT):
        if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
            raise UnsafeUrlError(f"address {address} is site-local")
        return
    if allow_private:
        ranges: Iterable[Any] = _PRIVATE_V4 if address.version == 4 else _PRIVATE_V6
        if any(address in network for network in ranges):
            return
    raise UnsafeUrlError(f"address {address} is not a public address")


def _numeric_trick(host: str) -> bool:
    """True for IPv4 in a form other than the dotted quad that resolvers still accept."""
    try:
        socket.inet_aton(host)
    except (OSError, ValueError):
        return False
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        return True
    return False


def check_url(url: str) -> httpx.URL:
    """The URL's syntax rules (no network): scheme, userinfo, host, port."""
    if not isinstance(url, str) or not url:
        raise UnsafeUrlError("must be an http(s) URL")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ord(char) < 33 or ord(char) == 127 for char in url):
        raise UnsafeUrlError("must not contain spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise UnsafeUrlError(f"is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrlError("must be an http or https URL "
                             f"(not {parsed.scheme or 'a local path'!r})")
    if parsed.userinfo:
        raise UnsafeUrlError("must not contain a user name or password")
    host = parsed.raw_host.decode("ascii", "replace")
    if not host:
        raise UnsafeUrlError("has no host")
    if "%" in host:
        raise UnsafeUrlError("must not contain a zone id")
    port = parsed.port
    if port is not None and not 0 < port < 65536:
        raise UnsafeUrlError(f"port {port} is out of range")
    if _numeric_trick(host):
        raise UnsafeUrlError(f"host {host!r} is an IPv4 address in a non-standard form")
    return parsed


def _resolve(host: str, port: int, timeout: float) -> list[Any]:
    """getaddrinfo with a deadline: the system resolver has none of its own that we set."""
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise FetchError(f"host {host!r} did not resolve within {timeout:g} s") from None
    except (OSError, UnicodeError) as exc:
        # Not a refusal: DNS may be down for a moment, and a webhook retries later.
        raise FetchError(f"host {host!r} does not resolve") from exc


def vet_url(url: str, *, allow_private: bool = False,
            resolve_timeout: float = RESOLVE_TIMEOUT) -> Target:
    """Check ``url`` and every address its host resolves to; the address to connect to.

    Raises UnsafeUrlError, or FetchError when the host does not resolve.
    """
    parsed = check_url(url)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow_private=allow_private)
        return Target(parsed, host, port, str(literal))
    infos = _resolve(host, port, resolve_timeout)
    addresses: list[IPAddress] = []
    for family, *_, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
            if address not in addresses:
                addresses.append(address)
    if not addresses:
        raise FetchError(f"host {host!r} does not resolve")
    for address in addresses:  # every one: a resolver may hand out any of them later
        try:
            check_address(address, allow_private=allow_private)
        except UnsafeUrlError as exc:
            raise UnsafeUrlError(f"host {host!r} resolves to a refused address: {exc}") \
                from None
    return Target(parsed, host, port, str(addresses[0]))


class _PinnedBackend(httpcore.SyncBackend):
    """Every TCP connection goes to the vetted address, whatever host the pool asks for.

    TLS still checks the certificate against the URL's host name (httpcore passes it as
    ``server_hostname``), so pinning changes where we connect, not whom we trust.
    """

    def __init__(self, address: str) -> None:
        self.address = address

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return super().connect_tcp(self.address, port, timeout=timeout,
                                   local_address=local_address,
                                   socket_options=socket_options)

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")


class _PinnedTransport(httpx.HTTPTransport):
    def __init__(self, address: str) -> None:
        super().__init__(trust_env=False, retries=0)
        # httpx builds its httpcore pool in __init__ with no way to pass a network backend;
        # the replacement is the same pool (default TLS context) with the pinned backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(), max_connections=1,
            max_keepalive_connections=0, network_backend=_PinnedBackend(address))


def _client(target: Target, timeout: float) -> httpx.Client:
    return httpx.Client(transport=_PinnedTransport(target.address), trust_env=False,
                        follow_redirects=False, timeout=httpx.Timeout(timeout),
                        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})


def _read_capped(response: httpx.Response, max_bytes: int, deadline: float) -> bytes:
    length = response.headers.get("content-length", "")
    if length.isdigit() and int(length) > max_bytes:
        raise ResponseTooLarge(f"the response is larger than {max_bytes} bytes")
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_raw(64 * 1024):
        total += len(chunk)
        if total > max_bytes:  # stop reading at once: the sender may never stop
            raise ResponseTooLarge(f"the response is larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise FetchError("the server took too long to send the response")
        chunks.append(chunk)
    return b"".join(chunks)


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx.ConnectError):
        return "could not connect"
    return "the connection failed"


def fetch(url: str, *, max_bytes: int, timeout: float, allow_private: bool = False,
          max_redirects: int = MAX_REDIRECTS,
          headers: Mapping[str, str] | None = None) -> FetchResult:
    """GET ``url`` under the rules; a 200's body of at most ``max_bytes``.

    Raises UnsafeUrlError (the URL or a redirect breaks the rules) or FetchError.
    """
    deadline = time.monotonic() + 2 * timeout
    current = url
    for _ in range(max_redirects + 1):
        target = vet_url(current, allow_private=allow_private, resolve_timeout=timeout)
        try:
            with _client(target, timeout) as client:
                request = client.build_request("GET", target.url, headers=headers)
                response = client.send(request, stream=True)
                try:
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        current = str(target.url.join(location))
                        logger.info("fetch %s: redirected to %s", target.url, current)
                        continue
                    if response.status_code != 200:
                        raise FetchError(f"the server answered {response.status_code}")
                    content = _read_capped(response, max_bytes, deadline)
                    return FetchResult(str(target.url), response.status_code,
                                       response.headers.get("content-type", ""), content)
                finally:
                    response.close()
        except httpx.HTTPError as exc:
            raise FetchError(f"fetching {target.host} failed: {_describe(exc)}") from None
    raise FetchError(f"more than {max_redirects} redirects")


def post(url: str, content: bytes, *, headers: Mapping[str, str], timeout: float,
         allow_private: bool = False, max_response_bytes: int = 64 * 1024) -> PostResult:
    """POST ``content`` to ``url`` under the rules; redirects are not followed.

    The answer's body is read (up to ``max_response_bytes``) and dropped: only its status
    counts. Raises UnsafeUrlError or FetchError.
    """
    target = vet_url(url, allow_private=allow_private, resolve_timeout=timeout)
    deadline = time.monotonic() + 2 * timeout
    try:
        with _client(target, timeout) as client:
            request = client.build_request("POST", target.url, content=content,
                                           headers=dict(headers))
            response = client.send(request, stream=True)
            try:
                with contextlib.suppress(ResponseTooLarge):
                    _read_capped(response, max_response_bytes, deadline)
                return PostResult(response.status_code, response.headers.get("retry-after"))
            finally:
                response.close()
    except httpx.HTTPError as exc:
        raise FetchError(f"sending to {target.host} failed: {_describe(exc)}") from None
