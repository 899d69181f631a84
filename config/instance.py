"""A running ``annosync up``, as other commands on the same data folder find it."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

INSTANCE_FILE = "instance.json"
UP_LOCK = ".annosync-up.lock"  # held by a running `annosync up` for its whole life


def running_instance(data_dir: Path) -> dict[str, Any]:
    """What ``annosync up`` wrote of itself in ``data_dir`` while it runs (its private
    Redis, its receiver's URL), so every command run on the same folder reaches the same
    instance without settings; {} when no ``up`` runs there (a file left by one that was
    killed is ignored: nobody holds the lock)."""
    try:
        found = json.loads((data_dir / INSTANCE_FILE).read_text())
        with (data_dir / UP_LOCK).open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # taken: no `up` holds it
        return {}
    except BlockingIOError:
        return found if isinstance(found, dict) else {}
    except (OSError, ValueError):
        return {}
