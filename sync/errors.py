"""annosync's errors: one hierarchy, with the errors of outside libraries translated where
they enter (the database engine, the Redis calls, the storage backends, the Label Studio
client), so callers — the HTTP edge above all — handle annosync's own errors only::

    AnnosyncError
    ├── Unavailable                 a service annosync needs failed: retry later (HTTP 503)
    │   ├── DatabaseUnavailable     connection lost or refused, database locked, timeouts
    │   │                           (sync.db: every engine's "handle_error" event)
    │   └── QueueUnavailable        Redis could not be reached (sync.jobs, sync.readiness)
    ├── StorageError                a storage operation failed (sync.storage.*)
    │   └── UnsafeKeyError          a key that would leave the storage root (also InvalidInput)
    ├── LabelStudioError            the Label Studio API failed or refused (sync.labelstudio)
    ├── Busy                        someone else holds it; try again later (HTTP 429)
    │   ├── ProjectBusy             another process works on the project (sync.locks)
    │   └── ExportsBusy             every export slot is taken (sync.archives)
    ├── ApplyError                  a delivery cannot be applied as it is (sync.events)
    ├── LaunchError                 a process annosync starts did not come up (sync.launcher)
    ├── GenerationError             storage disagrees with the store (sync.generations)
    │   └── GenerationCorrupt       stored bytes do not match the digest naming them
    ├── OutboundError               a trigger request got no answer (sync.outbound)
    │   └── ForbiddenAddress        its URL resolves to a private or local address
    └── InvalidInput (ValueError)   input annosync refuses, named: HTTP 400 / CLI exit 2
        ├── LimitExceeded           over ANNOSYNC_MAX_* (sync.limits)
        ├── LabelConfigError        a label config that is not usable XML (sync.labelconfig)
        ├── ConvertError            an export file convert cannot read (sync.convert)
        ├── JSONStreamError         malformed JSON in a streamed export (sync.jsonstream)
        ├── GenerationNotFound      no such generation, or it expired (sync.materialise)
        ├── UnknownProject          annosync has received nothing of that project (sync.store)
        ├── ResyncError             a resync cannot run as asked (sync.reconcile)
        └── RLEError                a brush mask that does not decode (sync.exporters.rle)

Settings errors are ``config.settings.SettingsError`` (a ValueError): ``config`` is below
``sync`` and depends on nothing of it. Errors that are bugs (SQLAlchemy's IntegrityError,
a KeyError) are not translated: they are not conditions a caller can handle.
"""

from __future__ import annotations


class AnnosyncError(Exception):
    """Every error annosync raises on purpose."""


class Unavailable(AnnosyncError):
    """A service annosync needs (database, Redis) failed; the same call may work later."""


class DatabaseUnavailable(Unavailable):
    """The database could not be reached or did not answer in time."""


class QueueUnavailable(Unavailable):
    """Redis could not be reached."""


class InvalidInput(AnnosyncError, ValueError):
    """Input annosync refuses; the message names what and why."""


class UnknownProject(InvalidInput):
    """annosync has received nothing of the project (HTTP 404, CLI exit 2)."""

    def __init__(self, project_id: int) -> None:
        super().__init__(f"no project {project_id}: annosync has received nothing of it")
        self.project_id = project_id


class Busy(AnnosyncError):
    """Someone else holds what was asked for; try again later."""
