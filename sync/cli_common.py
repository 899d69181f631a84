"""What every ``annosync`` command shares: its settings, its usage error, and one readable
line (never a traceback) for every failure, with the exit code that says whose it was."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from config.settings import Settings, SettingsError, load_settings
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


def run(args: argparse.Namespace) -> int:
    """Run the command ``args.command_target`` names (``module:function`` in ``sync``)."""
    module, _, name = args.command_target.partition(":")
    command = getattr(importlib.import_module(f"sync.{module}"), name)
    try:
        return command(args)
    except (SettingsError, InvalidInput) as exc:  # the user's input: exit 2
        print(f"annosync: {exc}", file=sys.stderr)
        return 2
    except AnnosyncError as exc:
        print(f"annosync: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one readable line, never a traceback
        logging.getLogger("annosync").debug("failure", exc_info=True)
        print(f"annosync: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: Exception) -> str:
    """What to say about an error from a library. Only commands that use the database or
    Redis import their clients (``convert`` imports neither): an error of a library that was
    never imported cannot occur, so its class is looked up only if it was."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc and isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
        return f"database error: {str(exc).splitlines()[0][:300]}"
    redis_exc = sys.modules.get("redis.exceptions")
    if redis_exc and isinstance(exc, redis_exc.RedisError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
