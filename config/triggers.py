"""CI retraining triggers: who is told when a project's dataset changed enough.

Triggers come from the simple settings (``ANNOSYNC_TRIGGER_URLS``: signed generic webhooks)
and from a TOML file (``ANNOSYNC_TRIGGERS_FILE``), one ``[[trigger]]`` table each, checked
against ``config/schemas/triggers.json``::

    [[trigger]]
    name = "retrain-detector"
    target = "github"            # webhook (default) | github | gitlab
    url = "https://api.github.com/repos/acme/detector/dispatches"
    secret_env = "GITHUB_TOKEN"  # or secret = "..." (webhook: a whsec_ secret)
    projects = [3]               # default: every project
    min_changes = 50             # tasks changed since the last trigger
    max_delay_s = 600            # or this long after the first change not yet announced
    min_interval_s = 900         # at most one trigger per this long
    splits = ["train", "val"]    # count changes in these splits only
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from jsonschema import Draft202012Validator

SCHEMA = Path(__file__).with_name("schemas") / "triggers.json"
DEFAULT_MIN_CHANGES = 100
DEFAULT_MAX_DELAY_S = 3600.0
DEFAULT_MIN_INTERVAL_S = 300.0


@dataclass(frozen=True)
class Trigger:
    name: str
    target: str
    url: str
    secret: str = field(repr=False)
    projects: tuple[int, ...] | None = None
    min_changes: int = DEFAULT_MIN_CHANGES
    max_delay_s: float = DEFAULT_MAX_DELAY_S
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S
    splits: tuple[str, ...] | None = None
    event_type: str = "annosync.dataset.updated"
    ref: str = "main"

    def watches(self, project_id: int) -> bool:
        return self.projects is None or project_id in self.projects


def from_file(path: str, env) -> tuple[Trigger, ...]:
    """The triggers of a TOML file; ValueError naming the place and the rule otherwise."""
    try:
        document = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"not TOML: {exc}") from None
    validator = Draft202012Validator(_schema())
    for problem in sorted(validator.iter_errors(document), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in problem.absolute_path) or "(file)"
        raise ValueError(f"{where}: {problem.message[:200]}")
    triggers = tuple(_trigger(table, env) for table in document.get("trigger", []))
    names = [t.name for t in triggers]
    if len(set(names)) != len(names):
        raise ValueError("trigger names must be unique")
    return triggers


def _schema() -> dict:
    return json.loads(SCHEMA.read_text())


def _trigger(table: dict, env) -> Trigger:
    secret = table.get("secret")
    if "secret_env" in table:
        secret = env.get(table["secret_env"]) or None
        if secret is None:
            raise ValueError(f"trigger {table['name']}: {table['secret_env']} is not set")
    if not secret:
        raise ValueError(f"trigger {table['name']}: needs secret or secret_env")
    return Trigger(
        name=table["name"],
        target=table.get("target", "webhook"),
        url=table["url"],
        secret=secret,
        projects=tuple(table["projects"]) if "projects" in table else None,
        min_changes=table.get("min_changes", DEFAULT_MIN_CHANGES),
        max_delay_s=float(table.get("max_delay_s", DEFAULT_MAX_DELAY_S)),
        min_interval_s=float(table.get("min_interval_s", DEFAULT_MIN_INTERVAL_S)),
        splits=tuple(table["splits"]) if "splits" in table else None,
        event_type=table.get("event_type", "annosync.dataset.updated"),
        ref=table.get("ref", "main"),
    )


def from_urls(urls: tuple[str, ...], secret: str | None, **conditions) -> tuple[Trigger, ...]:
    """Signed generic webhooks of ``ANNOSYNC_TRIGGER_URLS``, named ``url-1``, ``url-2``…"""
    if urls and not secret:
        raise ValueError("ANNOSYNC_TRIGGER_URLS needs ANNOSYNC_TRIGGER_SECRET (a whsec_ secret)")
    return tuple(
        Trigger(f"url-{n}", "webhook", url, secret or "", **conditions)
        for n, url in enumerate(urls, start=1)
    )
