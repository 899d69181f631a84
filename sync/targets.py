"""Trigger targets: how a ``dataset.updated`` event becomes the request a CI system expects.

A target is a small :class:`TriggerTarget`, registered by short name (``target = "github"``
in the trigger file):

- ``webhook``: the event as JSON, signed per Standard Webhooks with the trigger's secret;
- ``github``: ``repository_dispatch`` (``event_type``, ``client_payload`` of at most 10
  top-level keys, as GitHub allows), bearer token;
- ``gitlab``: a pipeline trigger (form fields ``token``, ``ref``, ``variables[...]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from config.triggers import Trigger
from sync import signing

USER_AGENT = "annosync-trigger/1"


class TriggerTarget(Protocol):
    def request(
        self, trigger: Trigger, event: dict[str, Any], msg_id: str, timestamp: int
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers announcing ``event`` (``msg_id``: the same on every retry)."""


_REGISTRY: dict[str, TriggerTarget] = {}


def register(name: str) -> Callable[[type], type]:
    def decorate(cls: type) -> type:
        _REGISTRY[name] = cls()
        return cls

    return decorate


def target(name: str) -> TriggerTarget:
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


@register("webhook")
class SignedWebhook:
    def request(self, trigger, event, msg_id, timestamp):
        body = orjson.dumps(event)
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT}
        headers |= signing.headers(trigger.secret, msg_id, timestamp, body)
        return body, headers


@register("github")
class GitHubDispatch:
    """https://docs.github.com/rest/repos/repos#create-a-repository-dispatch-event"""

    def request(self, trigger, event, msg_id, timestamp):
        data = event["data"]
        payload = {  # GitHub refuses more than 10 top-level keys
            "project": data["project"],
            "generation": data["generation"],
            "previous_generation": data["previous_generation"],
            "tasks": data["changes"]["tasks"],
            "annotations": data["changes"]["annotations"],
            "counts": data["counts"],
            "manifest_key": data["manifest"]["key"],
            "manifest_sha256": data["manifest"]["sha256"],
            "bucket": data["bucket"],
            "delivery": msg_id,
        }
        body = orjson.dumps({"event_type": trigger.event_type, "client_payload": payload})
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {trigger.secret}",
            "X-GitHub-Api-Version": "2022-11-28",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
        }
        return body, headers


@register("gitlab")
class GitLabPipeline:
    """https://docs.gitlab.com/ci/triggers/ (POST .../projects/<id>/trigger/pipeline)"""

    def request(self, trigger, event, msg_id, timestamp):
        data = event["data"]
        fields = {
            "token": trigger.secret,
            "ref": trigger.ref,
            "variables[ANNOSYNC_PROJECT]": str(data["project"]),
            "variables[ANNOSYNC_GENERATION]": str(data["generation"]),
            "variables[ANNOSYNC_PREVIOUS_GENERATION]": str(data["previous_generation"] or ""),
            "variables[ANNOSYNC_MANIFEST_KEY]": data["manifest"]["key"],
            "variables[ANNOSYNC_MANIFEST_SHA256]": data["manifest"]["sha256"],
            "variables[ANNOSYNC_BUCKET]": data["bucket"],
            "variables[ANNOSYNC_DELIVERY]": msg_id,
        }
        headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT}
        return urlencode(fields).encode(), headers
