"""The outbound address rules, and fetches from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from workers import netguard
from workers.netguard import FetchError, ResponseTooLarge, UnsafeUrlError

# --------------------------------------------------------------------------- the rules

REFUSED_ADDRESSES = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255",
    "192.168.1.1", "169.254.1.1", "169.254.169.254", "100.64.0.1", "100.127.255.255",
    "0.0.0.0", "0.1.2.3", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1",
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1",
    "::", "::1", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "2002:7f00:1::", "2002:a00:1::", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1", "2001:db8::1", "2001::1", "fd00:ec2::254",
]
ALLOWED_ADDRESSES = ["1.1.1.1", "8.8.8.8", "93.184.216.34", "2606:4700:4700::1111",
                     "::ffff:8.8.8.8", "2002:808:808::", "64:ff9b::808:808"]


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused(address: str) -> None:
    with pytest.raises(UnsafeUrlError):
        netguard.check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ALLOWED_ADDRESSES)
def test_public_addresses_pass(address: str) -> None:
    netguard.check_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "192.168.0.9", "::1", "fd00::5",
                                     "::ffff:127.0.0.1", "100.64.1.1"])
def test_allow_private_opens_private_ranges(address: str) -> None:
    netguard.check_address(ipaddress.ip_address(address), allow_private=True)


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "::",
                                     "224.0.0.1", "255.255.255.255", "::ffff:169.254.169.254"])
def test_allow_private_still_refuses_metadata_and_specials(address: str) -> None:
    with pytest.raises(UnsafeUrlError):
        netguard.check_address(ipaddress.ip_address(address), allow_private=True)


REFUSED_URLS = [
    ("file:///etc/passwd", "http or https"),
    ("ftp://example.com/a.png", "http or https"),
    ("gopher://127.0.0.1:6379/_INFO", "http or https"),
    ("/etc/passwd", "http or https"),
    ("etc/passwd", "http or https"),
    ("data:image/png;base64,AAAA", "http or https"),
    ("http://user:pw@example.com/", "user name or password"),
    ("http://user@example.com/", "user name or password"),
    ("http://2130706433/", "non-standard form"),
    ("http://0x7f.1/", "non-standard form"),
    ("http://0x7f000001/", "non-standard form"),
    ("http://017700000001/", "non-standard form"),
    ("http://127.1/", "non-standard form"),
    ("http://0177.0.0.1/", "valid URL"),
    ("http://127.0.0.1/", "not a public address"),
    ("http://127.0.0.1:8080/x", "not a public address"),
    ("http://169.254.169.254/latest/meta-data/", "metadata"),
    ("http://[::1]/", "not a public address"),
    ("http://[::ffff:127.0.0.1]/", "embeds IPv4"),
    ("http://[fe80::1%25eth0]/", "zone id"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://10.0.0.1/", "not a public address"),
    ("http://localhost/", "refused address"),
    ("http://example.com:99999/", "out of range"),
    ("http://exa mple.com/", "spaces"),
    ("http:///nohost", "no host"),
    ("", "http(s) URL"),
    ("http://example.com/" + "a" * 3000, "longer than"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_URLS)
def test_urls_are_refused_with_a_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeUrlError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        netguard.vet_url(url)


def test_a_public_literal_passes_and_is_pinned() -> None:
    target = netguard.vet_url("https://93.184.216.34:8443/a.png")
    assert (target.host, target.port, target.address) == ("93.184.216.34", 8443,
                                                          "93.184.216.34")


def test_loopback_private_and_metadata_are_refused_by_default() -> None:
    # The default of the setting is off, and the default of the functions too.
    from workers.settings import Settings

    assert Settings().webhook_allow_private is False
    assert Settings().allow_image_urls is False
    for url in ("http://127.0.0.1/", "http://192.168.0.1/", "http://169.254.169.254/",
                "http://[::1]/", "http://localhost/"):
        with pytest.raises(UnsafeUrlError):
            netguard.fetch(url, max_bytes=100, timeout=1)
        with pytest.raises(UnsafeUrlError):
            netguard.post(url, b"{}", headers={}, timeout=1)


# --------------------------------------------------------------------------- a real server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
              ) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        port = self.server.server_address[1]
        path = self.path
        if path == "/ok":
            self._send(200, b"hello", {"Content-Type": "text/plain"})
        elif path.startswith("/hops/"):  # /hops/N redirects N times, then /ok
            left = int(path.rsplit("/", 1)[1])
            target = "/ok" if left <= 1 else f"/hops/{left - 1}"
            self._send(302, headers={"Location": f"http://127.0.0.1:{port}{target}"})
        elif path == "/to-metadata":
            self._send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
        elif path == "/to-file":
            self._send(302, headers={"Location": "file:///etc/passwd"})
        elif path == "/relative":
            self._send(301, headers={"Location": "/ok"})
        elif path == "/missing":
            self._send(404, b"no")
        elif path == "/big":
            self._send(200, b"x" * 5000)
        elif path == "/endless":  # chunked, no Content-Length, never ends on its own
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(100_000):
                    self.wfile.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/lying-length":  # claims 10 bytes, the connection carries more
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.end_headers()
            self.wfile.write(b"z" * 10)
        elif path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        else:
            self._send(404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.rfile.read(length)
        status = int(self.path.strip("/") or "200")
        self._send(status, b"thanks", {"Retry-After": "7"} if status == 429 else None)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _get(url: str, **kwargs: object) -> netguard.FetchResult:
    options: dict = {"max_bytes": 1000, "timeout": 2, "allow_private": True, **kwargs}
    return netguard.fetch(url, **options)


def test_fetch_reads_a_body(server: str) -> None:
    result = _get(server + "/ok")
    assert (result.status, result.content, result.content_type) == (200, b"hello",
                                                                    "text/plain")


def test_the_local_server_is_refused_without_allow_private(server: str) -> None:
    with pytest.raises(UnsafeUrlError, match="not a public address"):
        _get(server + "/ok", allow_private=False)


def test_redirects_are_followed_up_to_the_limit(server: str) -> None:
    assert _get(server + "/hops/3").content == b"hello"
    assert _get(server + "/relative").content == b"hello"
    with pytest.raises(FetchError, match="more than 3 redirects"):
        _get(server + "/hops/4")


@pytest.mark.parametrize(("path", "reason"), [("/to-metadata", "metadata"),
                                              ("/to-file", "http or https")])
def test_every_redirect_hop_is_checked_again(server: str, path: str, reason: str) -> None:
    with pytest.raises(UnsafeUrlError, match=reason):
        _get(server + path)


def test_the_byte_cap_is_checked_while_streaming(server: str) -> None:
    with pytest.raises(ResponseTooLarge, match="larger than 1000 bytes"):
        _get(server + "/big")  # Content-Length says so up front
    started = time.monotonic()
    with pytest.raises(ResponseTooLarge):
        _get(server + "/endless", max_bytes=10_000)  # no Content-Length: counted
    assert time.monotonic() - started < 2, "the fetch must stop as soon as the cap is passed"
    assert _get(server + "/lying-length").content == b"z" * 10


def test_a_slow_server_times_out(server: str) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        _get(server + "/slow", timeout=0.5)
    assert time.monotonic() - started < 2


def test_a_bad_status_is_a_fetch_error(server: str) -> None:
    with pytest.raises(FetchError, match="answered 404"):
        _get(server + "/missing")


def test_nothing_listening_is_a_fetch_error() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        with pytest.raises(FetchError, match="could not connect"):
            _get(f"http://127.0.0.1:{port}/ok")


def test_the_connection_goes_to_the_pinned_address(server: str) -> None:
    # The host name is never resolved again: the transport connects to the vetted address,
    # so a DNS answer that changes after the check (rebinding) is never used.
    port = int(server.rsplit(":", 1)[1])
    transport = netguard._PinnedTransport("127.0.0.1")
    with httpx.Client(transport=transport, trust_env=False) as client:
        response = client.get(f"http://rebinding.invalid:{port}/ok")
    assert response.text == "hello"


def test_post_reports_status_and_retry_after(server: str) -> None:
    result = netguard.post(server + "/200", b"{}", headers={"Content-Type": "application/json"},
                           timeout=2, allow_private=True)
    assert (result.status, result.retry_after) == (200, None)
    result = netguard.post(server + "/429", b"{}", headers={}, timeout=2, allow_private=True)
    assert (result.status, result.retry_after) == (429, "7")
    result = netguard.post(server + "/302", b"{}", headers={}, timeout=2, allow_private=True)
    assert result.status == 302  # never followed
