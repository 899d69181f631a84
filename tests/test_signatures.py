"""Optional HMAC signatures: Standard Webhooks and GitHub's X-Hub-Signature-256."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from conftest import Receiver, delivery, make_settings

from sync.runtime import Runtime

KEY = b"0123456789abcdef0123456789abcdef"
WHSEC = "whsec_" + base64.b64encode(KEY).decode()


@pytest.fixture
def signed(tmp_path, sqlite_url, redis_url):
    rt = Runtime(make_settings(tmp_path, sqlite_url, redis_url, signing_secrets=(WHSEC,)))
    r = Receiver(rt)
    yield r
    r.close()


def standard_headers(raw: bytes, msg_id: str = "msg_1", offset: int = 0, key: bytes = KEY) -> dict:
    stamp = int(time.time()) + offset
    signed_content = f"{msg_id}.{stamp}.".encode() + raw
    signature = base64.b64encode(hmac.new(key, signed_content, hashlib.sha256).digest())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": f"v1,bogus v1,{signature.decode()}",
    }


def test_a_standard_webhooks_signature_is_enough(signed):
    raw = json.dumps(delivery("03-ANNOTATION_CREATED")).encode()
    answer = signed.post(None, raw=raw, secret=None, headers=standard_headers(raw))
    assert answer.status_code == 202
    assert answer.json()["status"] == "queued"
    replay = signed.post(None, raw=raw, secret=None, headers=standard_headers(raw))
    assert replay.json()["status"] == "duplicate"  # a replayed webhook-id is never applied twice


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"offset": -305},  # too old
        {"offset": 305},  # from the future
        {"key": b"another key entirely, not ours!!"},
    ],
)
def test_bad_or_missing_signatures_are_401(signed, headers):
    raw = json.dumps(delivery("03-ANNOTATION_CREATED")).encode()
    hdrs = standard_headers(raw, **headers) if headers else {}
    answer = signed.post(None, raw=raw, secret=None, headers=hdrs)
    assert answer.status_code == 401
    assert "signature" in answer.json()["message"]


def test_a_signature_over_other_bytes_is_401(signed):
    raw = json.dumps(delivery("03-ANNOTATION_CREATED")).encode()
    hdrs = standard_headers(raw)
    assert signed.post(None, raw=raw + b" ", secret=None, headers=hdrs).status_code == 401


def test_github_signature(signed):
    raw = json.dumps(delivery("03-ANNOTATION_CREATED")).encode()
    good = "sha256=" + hmac.new(WHSEC.encode(), raw, hashlib.sha256).hexdigest()
    assert (
        signed.post(None, raw=raw, secret=None, headers={"X-Hub-Signature-256": good}).status_code
        == 202
    )
    bad = "sha256=" + "0" * 64
    assert (
        signed.post(None, raw=raw, secret=None, headers={"X-Hub-Signature-256": bad}).status_code
        == 401
    )


def test_the_shared_secret_still_works_alongside(signed):
    assert signed.post(delivery("03-ANNOTATION_CREATED")).status_code == 202
