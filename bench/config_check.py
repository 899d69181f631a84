"""What the receiver's label-config check costs per delivery, with and without the cache of
parsed configs (every delivery of a project repeats its config, so each distinct config is
parsed once per process).

Usage: .venv/bin/python bench/config_check.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sync import limits  # noqa: E402

HOOKS = ROOT / "tests/fixtures/label-studio/webhooks"
FIXTURE = json.loads((HOOKS / "03-ANNOTATION_CREATED.json").read_text())["body"]
LABELS = "".join(f'<Label value="class{n:05d}"/>' for n in range(10_000))
BIG = (
    '<View><Image name="image" value="$image"/>'
    f'<RectangleLabels name="b" toName="image">{LABELS}</RectangleLabels></View>'
)


def per_check_ms(config: str, cached: bool, rounds: int = 20) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        if not cached:
            limits._parse.cache_clear()
        fresh = config[:-1] + config[-1]  # a new string object, as each request brings
        limits.config_issues(fresh, limits.Limits())
    return (time.perf_counter() - started) / rounds * 1000


def main() -> int:
    print(f"{'config':<22}{'uncached ms':>12}{'cached ms':>11}")
    for name, config in (
        ("fixture (6 labels)", FIXTURE["project"]["label_config"]),
        ("10,000 labels", BIG),
    ):
        print(f"{name:<22}{per_check_ms(config, False):>12.2f}{per_check_ms(config, True):>11.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
