"""Bounded outbound HTTP: what annosync sends to other people's servers (CI triggers) and
fetches from them (media).

Every request has a connect and a read timeout, reads at most a set number of bytes of the
answer, and goes only to public addresses unless a setting (``ANNOSYNC_TRIGGER_ALLOW_PRIVATE``,
``ANNOSYNC_MEDIA_ALLOW_PRIVATE``) allows private, loopback and link-local ones (a URL must
not become a way to reach the machine's own services). POSTs follow no redirect; GETs
follow a few, each destination checked again. The name is resolved and checked before the
request; requests resolves it again to connect, so a name whose answer changes in between
(DNS rebinding) is the remaining gap.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from sync.errors import AnnosyncError

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 15.0
MAX_ANSWER_BYTES = 64 * 1024


class OutboundError(AnnosyncError):
    """The request could not be made or got no answer (the message is one line)."""


class ForbiddenAddress(OutboundError):
    """The URL's host resolves to an address annosync may not send to."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    elapsed_ms: int


def _forbidden(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def check_destination(
    url: str, allow_private: bool, setting: str = "ANNOSYNC_TRIGGER_ALLOW_PRIVATE"
) -> None:
    """Refuse a URL that is not http(s), or whose host resolves to a non-public address."""
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise OutboundError(f"not an http(s) URL: {url[:80]!r}")
    if allow_private:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OutboundError(f"cannot resolve {parts.hostname}: {exc.strerror}") from None
    for *_rest, sockaddr in infos:
        if _forbidden(sockaddr[0]):
            raise ForbiddenAddress(
                f"{parts.hostname} resolves to {sockaddr[0]}, a private or local address "
                f"({setting}=1 allows it)"
            )


def post(url: str, body: bytes, headers: dict[str, str], allow_private: bool) -> Answer:
    """POST ``body``; the answer's status and at most ``MAX_ANSWER_BYTES`` of its body."""
    check_destination(url, allow_private)
    started = time.monotonic()
    try:
        with requests.post(
            url,
            data=body,
            headers=headers,
            timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            allow_redirects=False,
            stream=True,
        ) as response:
            answer = response.raw.read(MAX_ANSWER_BYTES, decode_content=True)
    except requests.RequestException as exc:
        raise OutboundError(f"POST {urlsplit(url).netloc}: {type(exc).__name__}") from None
    return Answer(response.status_code, answer, int((time.monotonic() - started) * 1000))


MAX_REDIRECTS = 3


class TooLarge(OutboundError):
    """The answer is bigger than the caller allows."""


@dataclass(frozen=True)
class Fetched:
    status: int  # 200, or 304 when ``etag`` still matches (then ``body`` is empty)
    body: bytes
    etag: str | None
    content_type: str


def get(
    url: str,
    headers: dict[str, str],
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
    setting: str = "ANNOSYNC_MEDIA_ALLOW_PRIVATE",
) -> Fetched:
    """GET ``url`` (a few redirects followed, each checked); a 2xx or 304 answer of at most
    ``max_bytes``, else :class:`OutboundError` naming the status or the limit."""
    for _ in range(MAX_REDIRECTS + 1):
        check_destination(url, allow_private, setting)
        try:
            with requests.get(
                url,
                headers=headers,
                timeout=(min(CONNECT_TIMEOUT_S, timeout_s), timeout_s),
                allow_redirects=False,
                stream=True,
            ) as response:
                if response.is_redirect and response.headers.get("Location"):
                    url = requests.compat.urljoin(url, response.headers["Location"])
                    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                    continue
                return _read(response, url, max_bytes)
        except requests.RequestException as exc:
            raise OutboundError(f"GET {urlsplit(url).netloc}: {type(exc).__name__}") from None
    raise OutboundError(f"GET {urlsplit(url).netloc}: more than {MAX_REDIRECTS} redirects")


def _read(response: requests.Response, url: str, max_bytes: int) -> Fetched:
    where = urlsplit(url).netloc
    etag = response.headers.get("ETag")
    kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if response.status_code == 304:
        return Fetched(304, b"", etag, kind)
    if not 200 <= response.status_code < 300:
        raise OutboundError(f"GET {where}: HTTP {response.status_code}")
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"GET {where}: {declared} bytes, more than {max_bytes}")
    body = response.raw.read(max_bytes + 1, decode_content=True)
    if len(body) > max_bytes:
        raise TooLarge(f"GET {where}: more than {max_bytes} bytes")
    return Fetched(response.status_code, body, etag, kind)
