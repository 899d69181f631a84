"""What the commands that work on an instance's state share: its settings, found from the
data folder, and the check that its schema is current."""

from __future__ import annotations

from pathlib import Path

from config.settings import Settings
from sync import db, launcher
from sync.cli_common import UsageError, settings_from_env


def instance_settings() -> Settings:
    """The settings of a command that works on an instance's state: on SQLite, its database
    file must exist (connecting would create an empty one, then fail on every table)."""
    settings = settings_from_env()
    path = db.sqlite_file(settings.database_url)
    if path and not Path(path).exists():
        raise UsageError(
            f"no annosync database at {path}: run `annosync up` there first, or set "
            "ANNOSYNC_DATA_DIR (or ANNOSYNC_DATABASE_URL) to the instance's"
        )
    return settings


def require_current_schema(settings: Settings) -> None:
    if not db.is_current(settings.database_url):
        raise launcher.LaunchError(
            "the database schema is not up to date: run `annosync db upgrade`"
        )
