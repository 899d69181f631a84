"""Pointing Label Studio at annosync: a webhook per project.

Label Studio's open-source edition has no organisation-wide webhooks (``POST /api/webhooks/``
without a project answers 404), so each project needs its own; a project created later needs
one too, which ``annosync connect --watch`` adds. Each webhook posts to the project's own
URL, ``/webhooks/label-studio/<id>``, so even deliveries without a payload name their project.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sync.errors import InvalidInput
from sync.labelstudio import LabelStudioClient


@dataclass
class Connected:
    added: list[int] = field(default_factory=list)
    present: list[int] = field(default_factory=list)

    def line(self) -> str:
        total = len(self.added) + len(self.present)
        noun = "project" if total == 1 else "projects"
        added, present = len(self.added), len(self.present)
        return f"{total} {noun}: {added} webhooks added, {present} already there"


def receiver_base(url: str) -> str:
    """The receiver's base URL as given, checked (``http(s)://host[:port]``)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"--receiver-url must be an http(s) URL, not {url!r}")
    return url.rstrip("/")


def webhook_url(base: str, project_id: int) -> str:
    return f"{base}/webhooks/label-studio/{int(project_id)}"


def connect(client: LabelStudioClient, base: str, header: str, secret: str) -> Connected:
    """Give every project without one a webhook to annosync: all actions, with payload,
    authenticated by ``header`` (``Authorization: Bearer <secret>``, or the bare secret)."""
    value = f"Bearer {secret}" if header.lower() == "authorization" else secret
    done = Connected()
    for project in client.projects():
        project_id = int(project["id"])
        url = webhook_url(base, project_id)
        if any(hook.get("url") == url for hook in client.webhooks(project_id)):
            done.present.append(project_id)
            continue
        client.create_webhook(
            {
                "project": project_id,
                "url": url,
                "send_payload": True,
                "send_for_all_actions": True,
                "headers": {header: value},
                "is_active": True,
            }
        )
        done.added.append(project_id)
    return done
