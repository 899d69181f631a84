"""Bounded outbound HTTP: what annosync sends to other people's servers (CI triggers).

Every request has a connect and a read timeout, follows no redirect, reads at most
``MAX_ANSWER_BYTES`` of the answer, and goes only to public addresses unless the setting
``ANNOSYNC_TRIGGER_ALLOW_PRIVATE`` allows private, loopback and link-local ones (a
trigger URL must not become a way to reach the machine's own services). The name is
resolved and checked before the request; requests resolves it again to connect, so a name
whose answer changes in between (DNS rebinding) is the remaining gap: trigger URLs come from
the operator's settings, not from senders of webhooks.
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


def check_destination(url: str, allow_private: bool) -> None:
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
                "(ANNOSYNC_TRIGGER_ALLOW_PRIVATE=1 allows it)"
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
