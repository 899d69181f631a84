"""Database tables: the delivery inbox and the task store.

Timestamps that come from Label Studio are kept as normalised ISO strings
(``YYYY-MM-DDTHH:MM:SS.ffffffZ``) so that SQL and Python compare them the same way.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Delivery(Base):
    """One received webhook delivery; the inbox is the record of what must still happen."""

    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str | None] = mapped_column(String(128), unique=True)
    source: Mapped[str] = mapped_column(String(32), default="label-studio")
    action: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(BigInteger)
    # pending → applied | failed; ignored (unknown action); rejected (failed validation)
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    errors: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_deliveries_status_project", "status", "project_id", "id"),)


class Project(Base):
    """A Label Studio project as last seen: title and labelling config."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    title: Mapped[str | None] = mapped_column(Text)
    label_config: Mapped[str | None] = mapped_column(Text)
    config_digest: Mapped[str | None] = mapped_column(String(64))
    parsed_config: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[str | None] = mapped_column(String(32))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    config_version: Mapped[int] = mapped_column(Integer, default=0)
    # The last config that could not be adopted (not XML, over the limits), and why.
    config_error: Mapped[str | None] = mapped_column(Text)
    refused_digest: Mapped[str | None] = mapped_column(String(64))
    # Derived exports: the append-only class list (ids never move), the config version the
    # per-task outputs were rendered with, and the monotonic generation of the exports.
    classes: Mapped[str | None] = mapped_column(Text)
    exports_config_version: Mapped[int] = mapped_column(Integer, default=0)
    export_generation: Mapped[int] = mapped_column(Integer, default=0)
    export_digest: Mapped[str | None] = mapped_column(String(64))
    export_changes: Mapped[int] = mapped_column(Integer, default=0)
    # When the oldest change the aggregates do not reflect yet was recorded (None: none).
    changes_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Task(Base):
    """A task without its annotations; ``deleted`` rows are tombstones.

    ``version`` counts changes, and ``dirty`` is set while storage still owes this task a
    write (or a delete) of it. ``born`` is the delivery id that created this incarnation of
    the id (None: a pull or unknown); ``error`` why the task is missing from the exports
    (None: it is in them).
    """

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    project_id: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[str | None] = mapped_column(String(32))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[str | None] = mapped_column(String(32))
    version: Mapped[int] = mapped_column(Integer, default=1)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)
    born: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(Text)
    # sha256 of the bytes storage holds at tasks/<id>.json (None: never written).
    file_sha256: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_tasks_project", "project_id", "id"),
        Index("ix_tasks_dirty", "dirty", "project_id"),
    )


class Annotation(Base):
    """One annotation (the newest version seen); ``deleted`` rows are tombstones; ``born`` as
    for :class:`Task`."""

    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    task_id: Mapped[int] = mapped_column(BigInteger)
    project_id: Mapped[int | None] = mapped_column(BigInteger)
    body: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[str | None] = mapped_column(String(32))
    updated_at: Mapped[str | None] = mapped_column(String(32))
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[str | None] = mapped_column(String(32))
    born: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (Index("ix_annotations_task", "task_id", "id"),)


class ExportFragment(Base):
    """A task's rendered part of one export: the files it owns and its aggregate fragment.

    Aggregates (classes.txt, result.json, manifest.jsonl…) are rebuilt from these rows, so a
    rebuild never re-parses the tasks.
    """

    __tablename__ = "export_fragments"

    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    format: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    files: Mapped[str] = mapped_column(Text)  # JSON {storage key: sha256} of its own files
    fragment: Mapped[bytes] = mapped_column(LargeBinary)


class Generation(Base):
    """A pinned dataset generation of a project: its manifest's digest and counts.
    ``expired_at`` is set when retention removed its manifest (the row says it existed)."""

    __tablename__ = "generations"

    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    tasks: Mapped[int] = mapped_column(Integer)
    annotations: Mapped[int] = mapped_column(Integer)
    files: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When a trigger announced it: retention keeps it longer (a CI job may pull it later).
    announced_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class GenerationObject(Base):
    """A content-addressed object of a project's generations (stored once per content)."""

    __tablename__ = "generation_objects"

    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)


class TriggerState(Base):
    """Where a trigger stands for a project: the generation it last announced, when it first
    saw a change it has not announced yet, when it last sent; ``version`` for optimistic
    concurrency (two workers never fire the same change twice)."""

    __tablename__ = "trigger_state"

    trigger: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    announced_generation: Mapped[int | None] = mapped_column(Integer)
    first_unsent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    version: Mapped[int] = mapped_column(Integer, default=0)


class TriggerDelivery(Base):
    """One trigger message (the outbox): recorded before it is sent, kept after.
    pending -> sending (claimed until ``claimed_until``) -> delivered | pending (retry)
    | failed (attempts exhausted, refused address) | disabled (410)."""

    __tablename__ = "trigger_deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    trigger: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(Integer)
    previous_generation: Mapped[int | None] = mapped_column(Integer)
    msg_id: Mapped[str] = mapped_column(String(64))
    body: Mapped[bytes] = mapped_column(LargeBinary)  # the event, without any secret
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("ix_trigger_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
    )


class TriggerAttempt(Base):
    """One attempt to send a trigger delivery, and its answer."""

    __tablename__ = "trigger_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(BigInteger, index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    elapsed_ms: Mapped[int | None] = mapped_column(Integer)


class TriggerEndpoint(Base):
    """A trigger whose endpoint answered 410 Gone: nothing more is sent until a replay."""

    __tablename__ = "trigger_endpoints"

    trigger: Mapped[str] = mapped_column(String(64), primary_key=True)
    disabled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class Snapshot(Base):
    """An export snapshot (Label Studio's ``/exports`` shape) of a pinned generation:
    created -> in_progress -> completed | failed; its file is ``snapshots/<project>/<id>.json``."""

    __tablename__ = "snapshots"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    project_id: Mapped[int] = mapped_column(BigInteger, index=True)
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    generation: Mapped[int] = mapped_column(Integer)
    options: Mapped[str] = mapped_column(Text)  # the filters and serialization options
    counters: Mapped[str | None] = mapped_column(Text)
    md5: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class MediaFile(Base):
    """A task's media copied beside its labels: what it should be (``url``, ``keys``), what
    storage holds (``written``), and, when owed, when to try next.

    status: ``owed`` (to fetch at ``due_at``; ``attempts`` failed so far, ``error`` the last
    reason), ``done``, or ``gone`` (the task was deleted: its ``written`` keys to remove).
    """

    __tablename__ = "media_files"

    task_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    project_id: Mapped[int] = mapped_column(BigInteger, index=True)
    url: Mapped[str] = mapped_column(Text)
    keys: Mapped[str] = mapped_column(Text)  # JSON list: where the media should be
    written: Mapped[str] = mapped_column(Text, default="[]")  # JSON list: where storage has it
    status: Mapped[str] = mapped_column(String(8), index=True)
    due_at: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    etag: Mapped[str | None] = mapped_column(String(200))
    md5: Mapped[str | None] = mapped_column(String(32))
    size: Mapped[int | None] = mapped_column(BigInteger)
