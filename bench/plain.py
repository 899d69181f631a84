"""Side by side: annosync at several revisions, on the figures a user meets.

Each revision is checked out into a temporary git worktree and run as a production-shaped
stack (``bench/stack.py``, SQLite, local bucket, private Redis). Rounds alternate between the
revisions, so a machine that speeds up or slows down meanwhile affects them alike; the median
of the rounds is reported. Figures:

- receiver p50/p99 at 200 deliveries/s (keep-alive) while one worker drains a backlog of
  ``--backlog`` deliveries over 1,000 tasks;
- task-file freshness p50/p99 (100 deliveries/s over 200 tasks: 2xx to the new task file);
- a burst of 10,000 deliveries over 1,000 tasks: seconds until every export is final.

Usage: .venv/bin/python bench/plain.py REV [REV ...] [--rounds 3] [--json FILE]
(``.`` is this checkout as it is, uncommitted changes included.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    URL,
    _recorded,
    burst,
    freshness,
    import_body,
    paced,
    pct,
    update_body,
    wrk_send,
)
from bench.stack import stack  # noqa: E402


def while_draining(tree: Path, backlog: int, seconds: int = 10) -> dict:
    """Receiver latency at 200/s while one worker drains ``backlog`` deliveries."""
    with stack("sqlite", workers=0, private_redis=True, tree=tree) as s:
        requests.post(s.base + URL, data=import_body(1, 1000), headers=s.headers())
        bodies = [update_body(seq, seq % 1000 + 1) for seq in range(1, backlog + 1)]
        with tempfile.TemporaryDirectory() as tmp:
            sender = wrk_send(s.base + URL, bodies, Path(tmp))
            deadline = time.monotonic() + 120
            # With the import, and without the first body (wrk asks for one request at start
            # that it never sends).
            while _recorded(s.env["ANNOSYNC_DATABASE_URL"]) < backlog:
                if time.monotonic() > deadline:
                    raise RuntimeError("the backlog was not recorded in 2 minutes")
                time.sleep(0.1)
            sender.kill()
            sender.wait()
        s.start_workers(1)
        time.sleep(0.5)  # the worker is up and draining
        latencies = paced(s.base, s.headers(), 200, seconds, lambda n: update_body(n + 1, 1))
        pending = _recorded(s.env["ANNOSYNC_DATABASE_URL"], "pending")
    return {
        "draining_p50_ms": pct(latencies, 0.5),
        "draining_p99_ms": pct(latencies, 0.99),
        "draining_backlog_left": pending,  # > 0: the worker was draining throughout
    }


FIGURES = ["draining", "fresh", "burst"]


def measure(tree: Path, backlog: int, only: list[str]) -> dict:
    figures = {}
    if "draining" in only:
        figures |= while_draining(tree, backlog)
    if "fresh" in only:
        fresh = freshness("sqlite", 10, tree)
        figures |= {k: v for k, v in fresh.items() if k.startswith("fresh_task")}
    if "burst" in only:
        figures["burst_all_final_s"] = burst("sqlite", tree=tree)["burst_all_final_s"]
    return figures


def checkout(rev: str, stack_: ExitStack) -> Path:
    """A worktree of ``rev`` (``.``: this checkout), removed when ``stack_`` closes."""
    if rev == ".":
        return ROOT
    folder = Path(tempfile.mkdtemp(prefix="annosync-rev-")) / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "-q", str(folder), rev], check=True)
    stack_.callback(
        subprocess.run, [*git, "worktree", "remove", "--force", str(folder)], check=False
    )
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revs", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backlog", type=int, default=10_000)
    parser.add_argument("--json", default=str(ROOT / "bench/results/plain.json"))
    parser.add_argument(
        "--only", nargs="+", default=FIGURES, choices=FIGURES, help="measure only these"
    )
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {rev: [] for rev in args.revs}
    with ExitStack() as trees:
        folders = {rev: checkout(rev, trees) for rev in args.revs}
        for n in range(args.rounds):
            for rev in args.revs:
                runs[rev].append(measure(folders[rev], args.backlog, args.only))
                print(f"round {n + 1} {rev}: {runs[rev][-1]}", flush=True)
    medians = {
        rev: {k: statistics.median(r[k] for r in results) for k in results[0]}
        for rev, results in runs.items()
    }
    print(
        f"{'figure (median of ' + str(args.rounds) + ')':34s}"
        + "".join(f"{r:>14s}" for r in args.revs)
    )
    for key in medians[args.revs[0]]:
        print(f"{key:34s}" + "".join(f"{medians[r][key]:>14}" for r in args.revs))
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"runs": runs, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
