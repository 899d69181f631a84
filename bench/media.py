"""How fast owed images reach the bucket, by how many fetches run at once (media.FETCHERS).

A local server answers each image after a delay (the round trip to a remote image host);
N owed images are settled by the worker's media sync (`media.run_due`), to a local folder.
The figure a user notices: how long after a 1,000-image import the bucket has every image.

Usage: .venv/bin/python bench/media.py [--images 400] [--latency-ms 40] [--fetchers 1 4 8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import load_settings  # noqa: E402
from sync import db, media  # noqa: E402
from sync.models import MediaFile  # noqa: E402
from sync.runtime import Runtime  # noqa: E402

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 200  # 51 KB


def _server(latency_s: float) -> str:
    @Request.application
    def app(request: Request) -> Response:
        time.sleep(latency_s)
        return Response(IMAGE, mimetype="image/png")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}"


def run(images: int, latency_s: float, fetchers: int) -> float:
    base = _server(latency_s)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/a.db"
        db.upgrade(url)
        # The per-project lock lives in Redis: a db of its own on the machine's server.
        redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/14")
        env = {"ANNOSYNC_DATA_DIR": tmp, "ANNOSYNC_DATABASE_URL": url, "REDIS_URL": redis_url}
        rt = Runtime(load_settings(env, media_allow_private=True))
        with rt.sessions() as session:
            for n in range(1, images + 1):
                keys = [f"exports/1/{fmt}/images/{n}__{n}.png" for fmt in ("yolo", "coco")]
                session.add(
                    MediaFile(
                        task_id=n,
                        project_id=1,
                        url=f"{base}/img/{n}.png",
                        keys=orjson.dumps(keys).decode(),
                        written="[]",
                        status="owed",
                        due_at=0.0,
                        attempts=0,
                    )
                )
            session.commit()
        media.FETCHERS = fetchers
        started = time.perf_counter()
        settled = media.run_due(rt)
        elapsed = time.perf_counter() - started
        assert settled == images, settled
        rt.engine.dispose()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--latency-ms", type=float, default=40.0)
    parser.add_argument("--fetchers", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.images} images, {args.latency_ms:.0f} ms per request")
    for fetchers in args.fetchers:
        latency = args.latency_ms / 1000
        times = sorted(run(args.images, latency, fetchers) for _ in range(args.rounds))
        best, median = times[0], times[len(times) // 2]
        print(
            f"  {fetchers} at once: median {median:.2f} s ({args.images / median:.0f} images/s),"
            f" best {best:.2f} s"
        )


if __name__ == "__main__":
    main()
