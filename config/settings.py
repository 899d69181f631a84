"""The one list of annosync settings, read from the environment.

Every setting is declared once in ``SETTINGS`` with its variable name, parser, default and a
line of documentation; docs/settings.md (and `annosync settings`) is generated from the same list
(``annosync settings --markdown``). A bad value raises :class:`SettingsError` whose message is a
single line naming the variable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from config import triggers, values
from config.instance import running_instance
from config.triggers import Trigger


class SettingsError(ValueError):
    """A setting has a value annosync cannot use; the message names the variable."""


@dataclass(frozen=True)
class Setting:
    """One environment variable: how to parse it and what it is for."""

    env: str
    attr: str
    parse: Callable[[str], Any]
    default: str | None
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "ANNOSYNC_DATA_DIR",
        "data_dir",
        values.text,
        "./annosync-data",
        "Folder for the embedded defaults (SQLite file, local bucket, private Redis).",
    ),
    Setting(
        "ANNOSYNC_DATABASE_URL",
        "database_url",
        values.database_url,
        None,
        "SQLAlchemy URL of the inbox and task store. Default: SQLite file "
        "`<data dir>/annosync.db`; PostgreSQL in production (`postgresql://…` and "
        "`postgresql+psycopg://…` both work: psycopg 3 either way).",
    ),
    Setting(
        "REDIS_URL",
        "redis_url",
        values.redis_url,
        "redis://127.0.0.1:6379/0",
        "Redis for the RQ queues. `annosync up` starts a private redis-server when unset.",
    ),
    Setting(
        "ANNOSYNC_STORAGE_URL",
        "storage_url",
        values.storage_url,
        None,
        "Target storage: `file:///abs/path` or `s3://bucket/prefix`. Default: `<data dir>/bucket`.",
    ),
    Setting(
        "ANNOSYNC_S3_ENDPOINT_URL",
        "s3_endpoint_url",
        values.http_url,
        "",
        "Endpoint of an S3-compatible server (MinIO, R2, Ceph); AWS when empty.",
    ),
    Setting(
        "ANNOSYNC_WEBHOOK_SECRET",
        "webhook_secrets",
        values.secret_list,
        "",
        "Shared secret(s) expected in the webhook header, comma-separated for rotation.",
        secret=True,
    ),
    Setting(
        "ANNOSYNC_WEBHOOK_SIGNING_SECRET",
        "signing_secrets",
        values.secret_list,
        "",
        "Optional HMAC secret(s): deliveries signed with Standard Webhooks headers "
        "(`webhook-id`, `webhook-timestamp` within 300 s, `webhook-signature`) or "
        "`X-Hub-Signature-256` are accepted without the shared-secret header.",
        secret=True,
    ),
    Setting(
        "ANNOSYNC_WEBHOOK_HEADER",
        "webhook_header",
        values.header_name,
        "Authorization",
        "Header carrying the secret; `Authorization` expects `Bearer <secret>`.",
    ),
    Setting(
        "ANNOSYNC_MAX_BODY_BYTES",
        "max_body_bytes",
        values.positive_int,
        str(8 * 1024 * 1024),
        "Largest webhook body accepted (413 above it). A 5,000-task import is ~3.5 MB.",
    ),
    Setting(
        "ANNOSYNC_MAX_ITEMS",
        "max_items",
        values.positive_int,
        "10000",
        "Most tasks or annotations in one delivery (Label Studio batches by 5,000).",
    ),
    Setting(
        "ANNOSYNC_MAX_JSON_DEPTH",
        "max_json_depth",
        values.json_depth,
        "64",
        "Deepest JSON nesting accepted in a delivery.",
    ),
    Setting(
        "ANNOSYNC_MAX_LABELS",
        "max_labels",
        values.positive_int,
        "10000",
        "Most labels in a project's label config and classes in its exports; `category` "
        "values must be below it. A config over it is refused (400 naming the field).",
    ),
    Setting(
        "ANNOSYNC_MAX_LABEL_CHARS",
        "max_label_chars",
        values.positive_int,
        "256",
        "Longest label, in a label config or on a region.",
    ),
    Setting(
        "ANNOSYNC_MAX_REGIONS",
        "max_regions",
        values.positive_int,
        "10000",
        "Most result items (regions) in one annotation.",
    ),
    Setting(
        "ANNOSYNC_MAX_POINTS",
        "max_points",
        values.positive_int,
        "10000",
        "Most points in one polygon or polyline.",
    ),
    Setting(
        "ANNOSYNC_HTTP_THREADS",
        "http_threads",
        values.positive_int,
        "8",
        "Receiver threads running the application. A request reaches one only once it has been "
        "read whole, so slow or idle connections never hold one.",
    ),
    Setting(
        "ANNOSYNC_HTTP_CONNECTION_LIMIT",
        "http_connection_limit",
        values.positive_int,
        "4000",
        "Open connections the receiver holds at once; past it, new ones wait in the listen "
        "backlog until others close (never refused for good). The process's open-file limit is "
        "raised to fit.",
    ),
    Setting(
        "ANNOSYNC_HTTP_IDLE_TIMEOUT_S",
        "http_idle_timeout_s",
        values.positive_float,
        "20",
        "A connection that sends nothing this long, mid-request or between requests, is closed "
        "(checked every third of it): what a slow-header or idle attacker can hold a socket for.",
    ),
    Setting(
        "ANNOSYNC_HTTP_DRAIN_BYTES",
        "http_drain_bytes",
        values.positive_int,
        str(64 * 1024 * 1024),
        "Bodies over ANNOSYNC_MAX_BODY_BYTES but within this are read (spooled to disk) and "
        "answered with a JSON 413 the sender can read; larger ones get a plain 413 and the "
        "connection is closed.",
    ),
    Setting(
        "ANNOSYNC_EXPORT_WORKERS",
        "export_workers",
        values.positive_int,
        "2",
        "Direct exports (`/api/projects/<id>/export`) rendered at once, each in its own "
        "process, never on the webhook threads; more at once are answered 429 + Retry-After.",
    ),
    Setting(
        "ANNOSYNC_API_TOKEN",
        "api_token",
        values.optional_text,
        "",
        "Token for the `/api/...` routes (`Authorization: Token <token>`); unset: they answer 401.",
        secret=True,
    ),
    Setting(
        "LABEL_STUDIO_URL",
        "label_studio_url",
        values.http_url,
        "",
        "Label Studio base URL, for pulls (`send_payload=false`, reconciliation).",
    ),
    Setting(
        "LABEL_STUDIO_API_KEY",
        "label_studio_api_key",
        values.optional_text,
        "",
        "Label Studio API token for pulls.",
        secret=True,
    ),
    Setting(
        "ANNOSYNC_EXPORT_FORMATS",
        "export_formats",
        values.name_list,
        "YOLO,COCO,MANIFEST",
        "Derived exports kept fresh under `exports/<project>/` (empty: none).",
    ),
    Setting(
        "ANNOSYNC_EXPORT_DEBOUNCE_MS",
        "export_debounce_ms",
        values.non_negative_int,
        "500",
        "Wait after a change before rebuilding a project's aggregate exports.",
    ),
    Setting(
        "ANNOSYNC_GENERATIONS_KEEP",
        "generations_keep",
        values.non_negative_int,
        "10",
        "Pinned dataset generations kept per project (newest first; 0: none are pinned).",
    ),
    Setting(
        "ANNOSYNC_GENERATIONS_KEEP_HOURS",
        "generations_keep_hours",
        values.non_negative_float,
        "0",
        "Also keep every generation younger than this (0: only the newest"
        " `ANNOSYNC_GENERATIONS_KEEP`); each costs the files that changed plus the aggregates.",
    ),
    Setting(
        "ANNOSYNC_GENERATIONS_ANNOUNCED_KEEP_HOURS",
        "generations_announced_keep_hours",
        values.non_negative_float,
        "168",
        "Keep a generation that a trigger announced this long, however many come after it.",
    ),
    Setting(
        "ANNOSYNC_TRIGGER_URLS",
        "trigger_urls",
        values.url_list,
        "",
        "Generic CI trigger webhooks (comma-separated), signed per Standard Webhooks with"
        " `ANNOSYNC_TRIGGER_SECRET`; presets and per-project triggers: `ANNOSYNC_TRIGGERS_FILE`.",
    ),
    Setting(
        "ANNOSYNC_TRIGGER_SECRET",
        "trigger_secret",
        values.optional_text,
        "",
        "Signing secret (`whsec_<base64>`) of the `ANNOSYNC_TRIGGER_URLS` webhooks.",
        secret=True,
    ),
    Setting(
        "ANNOSYNC_TRIGGER_MIN_CHANGES",
        "trigger_min_changes",
        values.positive_int,
        "100",
        "A trigger fires once this many tasks changed since the generation it last announced…",
    ),
    Setting(
        "ANNOSYNC_TRIGGER_MAX_DELAY_S",
        "trigger_max_delay_s",
        values.non_negative_float,
        "3600",
        "…or this long after the first change it has not announced (0: only the count).",
    ),
    Setting(
        "ANNOSYNC_TRIGGER_MIN_INTERVAL_S",
        "trigger_min_interval_s",
        values.non_negative_float,
        "300",
        "A trigger fires at most once per this long.",
    ),
    Setting(
        "ANNOSYNC_TRIGGERS_FILE",
        "triggers_file",
        values.optional_text,
        "",
        "TOML file of triggers (`[[trigger]]`: name, target webhook/github/gitlab, url, secret"
        " or secret_env, projects, min_changes, max_delay_s, min_interval_s, splits).",
    ),
    Setting(
        "ANNOSYNC_TRIGGER_ALLOW_PRIVATE",
        "trigger_allow_private",
        values.bool,
        "0",
        "Allow trigger URLs that resolve to private, loopback or link-local addresses.",
    ),
    Setting(
        "ANNOSYNC_MEDIA",
        "media",
        values.bool,
        "1",
        "Copy each task's image next to its labels (`<format>/images/<stem>`) for the kept-fresh"
        " formats that name images (YOLO, YOLO_OBB, COCO, VOC); 0 turns it off.",
    ),
    Setting(
        "ANNOSYNC_MEDIA_MAX_BYTES",
        "media_max_bytes",
        values.positive_int,
        str(64 * 1024 * 1024),
        "Largest media file fetched; a bigger one is recorded as failed for its task.",
    ),
    Setting(
        "ANNOSYNC_MEDIA_TIMEOUT_S",
        "media_timeout_s",
        values.positive_float,
        "30",
        "Connect and read timeout of each media fetch.",
    ),
    Setting(
        "ANNOSYNC_MEDIA_ALLOW_PRIVATE",
        "media_allow_private",
        values.bool,
        "0",
        "Allow http(s) media URLs that resolve to private, loopback or link-local addresses "
        "(Label Studio's own URLs, from LABEL_STUDIO_URL, are always allowed).",
    ),
    Setting(
        "ANNOSYNC_MEDIA_LOCAL_FILES_ROOT",
        "media_local_files_root",
        values.optional_text,
        "",
        "Label Studio's LOCAL_FILES_DOCUMENT_ROOT when it is on this machine: "
        "`/data/local-files/?d=` media are read from it (else through LABEL_STUDIO_URL).",
    ),
    Setting(
        "ANNOSYNC_SPLIT",
        "split",
        values.split,
        "train=80,val=10,test=10",
        "Stable train/val/test split: a pure function of the task id, never reshuffled.",
    ),
    Setting(
        "ANNOSYNC_PROJECT_DELETE",
        "project_delete",
        values.choice("delete", "keep"),
        "delete",
        "On PROJECT_DELETED: `delete` the project's task files, or `keep` them.",
    ),
    Setting(
        "ANNOSYNC_SWEEP_INTERVAL_S",
        "sweep_interval_s",
        values.positive_float,
        "5",
        "How often a worker looks for deliveries or files still owed (lost jobs, outages).",
    ),
    Setting(
        "ANNOSYNC_RESYNC_INTERVAL_S",
        "resync_interval_s",
        values.non_negative_float,
        "3600",
        "Reconcile each project's bucket with the store this often (and the store with Label "
        "Studio when LABEL_STUDIO_URL is set); 0 turns the schedule off.",
    ),
    Setting(
        "ANNOSYNC_MAX_ATTEMPTS",
        "max_attempts",
        values.positive_int,
        "5",
        "Attempts to apply a delivery before it is marked failed.",
    ),
    Setting(
        "ANNOSYNC_INBOX_KEEP_HOURS",
        "inbox_keep_hours",
        values.non_negative_float,
        "168",
        "Applied and ignored deliveries leave the inbox this long after they arrived (failed"
        " and rejected ones stay until replayed); 0 keeps every delivery.",
    ),
    Setting("ANNOSYNC_QUEUE", "queue_name", values.text, "annosync", "Name of the RQ queue."),
    Setting(
        "LOG_LEVEL",
        "log_level",
        values.choice("debug", "info", "warning", "error"),
        "info",
        "Log level.",
    ),
    Setting(
        "ANNOSYNC_LOG_FORMAT",
        "log_format",
        values.choice("text", "json"),
        "text",
        "`json`: one JSON object per log line (time, level, logger, message), for log shippers.",
    ),
    Setting("DEBUG", "debug", values.bool, "0", "Debug mode (with LOG_LEVEL=DEBUG, debug logs)."),
)


@dataclass(frozen=True)
class Settings:
    """Parsed settings; build with :func:`load_settings`."""

    data_dir: Path
    database_url: str
    redis_url: str
    storage_url: str
    s3_endpoint_url: str | None
    webhook_secrets: tuple[str, ...] = field(repr=False)
    signing_secrets: tuple[str, ...] = field(repr=False)
    webhook_header: str
    max_body_bytes: int
    max_items: int
    max_json_depth: int
    max_labels: int
    max_label_chars: int
    max_regions: int
    max_points: int
    http_threads: int
    http_connection_limit: int
    http_idle_timeout_s: float
    http_drain_bytes: int
    export_workers: int
    api_token: str | None = field(repr=False)
    label_studio_url: str | None
    label_studio_api_key: str | None = field(repr=False)
    export_formats: tuple[str, ...]
    export_debounce_ms: int
    generations_keep: int
    generations_keep_hours: float
    generations_announced_keep_hours: float
    trigger_urls: tuple[str, ...]
    trigger_secret: str | None = field(repr=False)
    trigger_min_changes: int
    trigger_max_delay_s: float
    trigger_min_interval_s: float
    triggers_file: str | None
    trigger_allow_private: bool
    triggers: tuple[Trigger, ...] = field(repr=False)
    media: bool
    media_max_bytes: int
    media_timeout_s: float
    media_allow_private: bool
    media_local_files_root: str | None
    split: tuple[tuple[str, float], ...]
    project_delete: str
    sweep_interval_s: float
    resync_interval_s: float
    max_attempts: int
    inbox_keep_hours: float
    queue_name: str
    log_level: str
    log_format: str
    debug: bool

    def secret_values(self) -> tuple[str, ...]:
        """Every secret value in force, for log redaction."""
        values = [
            *self.webhook_secrets,
            *self.signing_secrets,
            self.api_token,
            self.label_studio_api_key,
            self.trigger_secret,
            *(t.secret for t in self.triggers),
        ]
        return tuple(v for v in values if v)


def load_settings(env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read every setting from ``env`` (default: ``os.environ``); ``overrides`` win."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = env.get(setting.env)
        if raw is None:
            raw = setting.default
        if raw is None:
            values[setting.attr] = None
            continue
        try:
            values[setting.attr] = setting.parse(raw)
        except ValueError as exc:
            shown = "(hidden)" if setting.secret else repr(raw)
            raise SettingsError(f"{setting.env}={shown}: {_reason(exc)}") from None
    values.update(overrides)
    if "triggers" not in overrides:
        values["triggers"] = _triggers(values, env)
    data_dir = Path(values["data_dir"]).expanduser().resolve()
    values["data_dir"] = data_dir
    if not values["database_url"]:
        values["database_url"] = f"sqlite:///{data_dir / 'annosync.db'}"
    if not values["storage_url"]:
        values["storage_url"] = (data_dir / "bucket").as_uri()
    if "REDIS_URL" not in env and "redis_url" not in overrides:
        values["redis_url"] = running_instance(data_dir).get("redis_url", values["redis_url"])
    known = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in known})


def _triggers(values: dict[str, Any], env: Mapping[str, str]) -> tuple[Trigger, ...]:
    """The triggers of ``ANNOSYNC_TRIGGER_URLS`` and of ``ANNOSYNC_TRIGGERS_FILE``."""
    try:
        found = triggers.from_urls(
            values["trigger_urls"],
            values["trigger_secret"],
            min_changes=values["trigger_min_changes"],
            max_delay_s=values["trigger_max_delay_s"],
            min_interval_s=values["trigger_min_interval_s"],
        )
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    if values["triggers_file"]:
        try:
            found += triggers.from_file(values["triggers_file"], env)
        except ValueError as exc:
            raise SettingsError(
                f"ANNOSYNC_TRIGGERS_FILE={values['triggers_file']}: {exc}"
            ) from None
    if len({t.name for t in found}) != len(found):
        raise SettingsError("ANNOSYNC_TRIGGERS_FILE: trigger names must be unique (url-N is taken)")
    return found


def _reason(exc: ValueError) -> str:
    text = str(exc)
    if text.startswith("invalid literal") or text.startswith("could not convert"):
        return "must be a number"
    return text


def settings_markdown() -> str:
    """The settings table (docs/settings.md, `annosync settings`)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "—"
        rows.append(f"| `{s.env}` | {default} | {s.doc} |")
    return "\n".join(rows)
