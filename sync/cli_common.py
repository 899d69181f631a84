"""What every ``annosync`` command shares: its settings, its usage error, and one readable
line (never a traceback) for every failure, with the exit code that says whose it was."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from pathlib import Path

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from config.settings import Settings, SettingsError, load_settings
from sync import db, launcher
from sync.errors import AnnosyncError, InvalidInput
from sync.logs import configure_logging


class UsageError(InvalidInput):
    """Bad input from the user (exit 2)."""


def settings_from_env(**overrides) -> Settings:
    """The settings from the environment, with logging configured by them."""
    settings = load_settings(**overrides)
    configure_logging(
        settings.log_level if not settings.debug else "debug",
        settings.secret_values(),
        settings.log_format,
    )
    return settings


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


def run(args: argparse.Namespace) -> int:
    """Run the command ``args.command_target`` names (``module:function`` in ``sync``)."""
    module, _, name = args.command_target.partition(":")
    command = getattr(importlib.import_module(f"sync.{module}"), name)
    try:
        return command(args)
    except (SettingsError, InvalidInput) as exc:  # the user's input: exit 2
        print(f"annosync: {exc}", file=sys.stderr)
        return 2
    except (AnnosyncError, RedisError) as exc:
        print(f"annosync: {exc}", file=sys.stderr)
        return 1
    except SQLAlchemyError as exc:
        print(f"annosync: database error: {str(exc).splitlines()[0][:300]}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one readable line, never a traceback
        logging.getLogger("annosync").debug("failure", exc_info=True)
        print(f"annosync: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
