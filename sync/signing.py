"""Standard Webhooks signatures (https://www.standardwebhooks.com): the same algorithm
verifies inbound deliveries and signs annosync's outbound triggers.

``webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">``;
a secret ``whsec_<base64>`` is used as the key it encodes, any other as its UTF-8 bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac


def key(secret: str) -> bytes:
    """The HMAC key of a secret."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except binascii.Error:
            pass
    return secret.encode()


def signature(secret: str, msg_id: str, timestamp: int | str, body: bytes) -> bytes:
    """The base64 signature (without the ``v1,`` prefix)."""
    content = f"{msg_id}.{timestamp}.".encode() + body
    return base64.b64encode(hmac.new(key(secret), content, hashlib.sha256).digest())


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of a signed message."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1," + signature(secret, msg_id, timestamp, body).decode(),
    }
