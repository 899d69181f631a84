"""Local storage alone, at several revisions: the time of one ``put_many`` of a drain's files.

A drain writes, per task, its task file and its files of each kept-fresh format. This times
``LocalStorage.put_many`` for a batch of 1 task and of 100 tasks (3 files each, in 3
folders) with the code of each revision (``git archive``; ``.`` is this checkout), each in
its own process, on the filesystem of ``--dir``.
Usage: .venv/bin/python bench/storage_writes.py REV [REV ...] [--repeat 200] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TIMER = """
import statistics, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from sync.storage.local import LocalStorage

storage = LocalStorage(tempfile.mkdtemp(dir=sys.argv[2]))
repeat = int(sys.argv[3])


def batch(n, tasks):
    items = []
    for t in range(tasks):
        items.append((f"tasks/{t}.json", b'{"id": %d, "n": %d}' % (t, n) * 20))
        items.append((f"exports/1/yolo/labels/{t}__img.txt", b"0 0.5 0.5 0.1 0.1\\n" * 3))
        items.append((f"exports/1/manifest/{t}.json", b'{"n": %d}' % n))
    return items


for tasks, runs in ((1, repeat), (100, max(5, repeat // 10))):
    times = []
    for n in range(runs):
        started = time.perf_counter()
        storage.put_many(batch(n, tasks))
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    print(f"{tasks} {statistics.median(times):.2f} {times[int(len(times) * 0.9)]:.2f}")
"""


def code_of(rev: str, into: Path) -> Path:
    """The ``sync`` package of ``rev`` under ``into`` (``.``: this checkout)."""
    if rev == ".":
        return ROOT
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "sync"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into / rev, filter="data")
    return into / rev


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("revs", nargs="+")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where files are written")
    args = parser.parse_args()
    print(f"{'revision':12s} {'batch':>10s} {'p50 ms':>9s} {'p90 ms':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        for rev in args.revs:
            code = code_of(rev, Path(tmp))
            with tempfile.TemporaryDirectory(dir=args.dir) as target:
                out = subprocess.run(
                    [sys.executable, "-c", TIMER, str(code), target, str(args.repeat)],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            for line in out.splitlines():
                tasks, p50, p90 = line.split()
                print(f"{rev:12s} {tasks + ' tasks':>10s} {p50:>9s} {p90:>9s}")


if __name__ == "__main__":
    main()
