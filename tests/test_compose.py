"""docker-compose.yml and scripts/Dockerfile, checked without Docker: the service graph, that
the services agree on names, ports, credentials and the bucket, that every annosync command
in them parses, and the containers' own commands run on this machine as the image's user
(an unprivileged uid owning the data folder as the Dockerfile makes it) against PostgreSQL,
Redis, an S3 server and a fake Label Studio standing in for the compose services."""

from __future__ import annotations

import contextlib
import graphlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import pytest
import requests
import yaml
from conftest import PG_ADMIN_URL, SECRET, _pg_reachable, delivery
from lsfake import FakeLabelStudio
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from sync import db, launcher
from sync.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (REPO / "scripts/Dockerfile").read_text()
ANNOSYNC = [name for name, s in SERVICES.items() if s.get("image") == "annosync:local"]
USER_VALUES = {"ANNOSYNC_WEBHOOK_SECRET": SECRET, "LABEL_STUDIO_TOKEN": "ls-token-for-compose"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")


def interpolate(value: str, given: dict[str, str] = USER_VALUES) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}`` with ``given`` set."""

    def one(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if given.get(name):
            return given[name]
        if kind == "?":
            raise AssertionError(f"compose would stop: {rest}")
        return rest if kind == "-" else ""

    return _VARIABLE.sub(one, str(value))


def environment(service: str) -> dict[str, str]:
    return {k: interpolate(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def command(service: str) -> list[str]:
    return [interpolate(part) for part in SERVICES[service]["command"]]


def healthcheck(service: str) -> list[str]:
    test = SERVICES[service]["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    return [interpolate(part) for part in test[1:]]


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# -- the file --------------------------------------------------------------------------------


def test_the_service_graph_starts_in_order_and_everything_that_stays_up_is_checked():
    graph = {name: set(s.get("depends_on") or {}) for name, s in SERVICES.items()}
    order = list(graphlib.TopologicalSorter(graph).static_order())  # raises on a cycle
    for name, service in SERVICES.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, f"{name} stays up unchecked"
        for needed, how in (service.get("depends_on") or {}).items():
            assert needed in SERVICES, f"{name} needs a service that does not exist: {needed}"
            wanted = how["condition"]
            if SERVICES[needed].get("restart") == "no":
                assert wanted == "service_completed_successfully", (name, needed)
            else:
                assert wanted == "service_healthy" and "healthcheck" in SERVICES[needed]
    before = order.index
    assert before("postgres") < before("migrate") < before("receiver") < before("connect")
    assert before("minio") < before("minio-bucket") < before("receiver")
    assert before("minio-bucket") < before("worker") and before("labelstudio") < before("connect")


def test_the_services_agree_on_names_ports_credentials_and_the_bucket():
    env = environment("receiver")
    assert all(environment(name) == env for name in ANNOSYNC)  # one environment for all
    database = urlsplit(env["ANNOSYNC_DATABASE_URL"])
    pg = environment("postgres")
    assert (database.hostname, database.port) == ("postgres", 5432)
    assert (database.username, database.password) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"])
    assert database.path == "/" + pg["POSTGRES_DB"]
    assert urlsplit(env["REDIS_URL"]).hostname == "redis"

    storage = urlsplit(env["ANNOSYNC_STORAGE_URL"])
    assert storage.scheme == "s3"
    made = re.search(r"mc mb --ignore-existing local/(\S+)", command("minio-bucket")[-1])
    assert made and made.group(1) == storage.hostname  # the bucket annosync writes to
    assert "http://minio:9000" in command("minio-bucket")[-1]
    assert env["ANNOSYNC_S3_ENDPOINT_URL"] == "http://minio:9000"  # MinIO's default port
    minio = environment("minio")
    assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"],
        minio["MINIO_ROOT_PASSWORD"],
    )
    assert environment("minio-bucket") == minio

    ls = command("labelstudio")
    assert env["LABEL_STUDIO_URL"] == "http://labelstudio:8080"  # its port inside the network
    assert env["LABEL_STUDIO_API_KEY"] == option(ls, "--user-token")
    assert "--enable-legacy-api-token" in ls  # a Token key works only then (Label Studio 1.23)
    assert environment("labelstudio")["SSRF_PROTECTION_ENABLED"] == "false"

    serve = command("receiver")
    port = option(serve, "--port")
    assert f"127.0.0.1:{port}/readyz" in " ".join(healthcheck("receiver"))
    assert SERVICES["receiver"]["ports"] == [f"{port}:{port}"]
    receiver_url = option(command("connect"), "--receiver-url")
    assert receiver_url == f"http://receiver:{port}"
    assert option(healthcheck("connect"), "--receiver-url") == receiver_url


def test_every_annosync_command_in_the_file_parses():
    parser = build_parser()
    argvs = [command(name) for name in ANNOSYNC]
    argvs += [healthcheck(name) for name in ANNOSYNC if "healthcheck" in SERVICES[name]]
    annosync = [argv for argv in argvs if argv[0] == "annosync"]
    assert len(annosync) >= 6
    for argv in annosync:
        parser.parse_args(argv[1:])  # exits 2 on a command or option that does not exist


def test_the_image_user_owns_the_data_volume():
    user = re.search(r"^USER (\S+)$", DOCKERFILE, re.M).group(1)
    assert re.search(rf"useradd .*--uid 10001 .*\b{user}\b", DOCKERFILE)
    assert re.search(rf"mkdir -p /data && chown {user}:{user} /data", DOCKERFILE)
    assert "ANNOSYNC_DATA_DIR=/data" in DOCKERFILE
    for name in ANNOSYNC:
        assert SERVICES[name]["volumes"] == ["data:/data"]  # a named volume: copied from the image


# -- the commands, run -----------------------------------------------------------------------

IMAGE_UID = 10001  # the Dockerfile's user


def _as_image_user() -> list[str]:
    """A prefix running a command as the image's uid. The interpreter lives under /root
    here, so it keeps the capability to read and search files (not to write them): writing
    to the data folder needs the ownership the Dockerfile gives it."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run as the image's user")
    caps = ["--inh-caps", "+dac_read_search", "--ambient-caps", "+dac_read_search"]
    return [
        "setpriv",
        "--reuid",
        str(IMAGE_UID),
        "--regid",
        str(IMAGE_UID),
        "--clear-groups",
        *caps,
    ]


@pytest.fixture
def data_dir():
    """A data folder made as the Dockerfile makes /data."""
    path = Path(tempfile.mkdtemp(prefix="annosync-compose-"))
    os.chown(path, IMAGE_UID, IMAGE_UID)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def empty_pg():
    """An empty PostgreSQL database, as the postgres service starts."""
    reason = _pg_reachable()
    if reason:
        pytest.skip(reason)
    name = f"annosync_compose_{uuid.uuid4().hex[:10]}"
    admin = create_engine(
        db.normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.mark.postgres
def test_the_containers_commands_run_as_the_image_user(data_dir, empty_pg, redis_url, s3_endpoint):
    prefix = _as_image_user()
    port = launcher.free_port()
    fake_ls = FakeLabelStudio(USER_VALUES["LABEL_STUDIO_TOKEN"], {1: {"title": "p"}}, {})
    # The compose environment, each service's address replaced by the one standing in for it.
    env = environment("receiver")
    bucket = urlsplit(env["ANNOSYNC_STORAGE_URL"]).hostname
    env.update(
        ANNOSYNC_DATABASE_URL=empty_pg,
        REDIS_URL=redis_url,
        ANNOSYNC_S3_ENDPOINT_URL=s3_endpoint,
        LABEL_STUDIO_URL=fake_ls.url,
        AWS_ACCESS_KEY_ID="testing",  # moto's
        AWS_SECRET_ACCESS_KEY="testing",
        ANNOSYNC_DATA_DIR=str(data_dir),  # the image's ENV: /data
        HOME=str(data_dir),
        PATH=f"{REPO / '.venv/bin'}:{os.environ['PATH']}",
        ANNOSYNC_MEDIA="0",  # the fixture's image is on a host that does not exist
    )
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)  # minio-bucket: mc mb --ignore-existing

    def here(argv: list[str]) -> list[str]:
        # the receiver's own port is a free one here; names of other services stay as written
        swapped = [str(port) if a == "8080" else a.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
                   for a in argv]  # fmt: skip
        return [*prefix, str(REPO / ".venv/bin" / swapped[0]), *swapped[1:]]

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(here(argv), env=env, capture_output=True, text=True, timeout=120)

    migrate = run(command("migrate"))
    assert migrate.returncode == 0, migrate.stderr
    started = []
    try:
        receiver = subprocess.Popen(here(command("receiver")), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)  # fmt: skip
        started.append(receiver)
        while "listening on" not in (line := receiver.stdout.readline()):
            assert line, "the receiver exited"
        health = subprocess.run(
            here(["python", *healthcheck("receiver")[1:]]), env=env, capture_output=True
        )
        assert health.returncode == 0, health.stderr
        answer = requests.post(
            f"http://127.0.0.1:{port}/webhooks/label-studio/1",
            json=delivery("03-ANNOTATION_CREATED"),
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=10,
        )
        assert answer.status_code == 202

        worker = subprocess.Popen(here(command("worker")), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)  # fmt: skip
        started.append(worker)
        key = urlsplit(env["ANNOSYNC_STORAGE_URL"]).path.strip("/") + "/tasks/1.json"
        deadline = time.monotonic() + 30
        while not s3.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount"):
            assert worker.poll() is None, worker.stderr.read()
            assert time.monotonic() < deadline, "the worker wrote no task file"
            time.sleep(0.2)
        checked = run(healthcheck("worker"))
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert checked.stdout.splitlines() == ["database: ok", "redis: ok", "storage: ok"]

        connected = run(healthcheck("connect"))
        assert connected.returncode == 0, connected.stderr
        assert [h["url"] for h in fake_ls.webhooks] == [
            "http://receiver:8080/webhooks/label-studio/1"  # as the compose network names it
        ]
    finally:
        for process in started:
            process.send_signal(signal.SIGTERM)
            process.wait(20)
        fake_ls.close()


def test_the_data_folder_must_belong_to_the_image_user(data_dir, tmp_path):
    """With the storage on the data volume (ANNOSYNC_STORAGE_URL=file:///data/bucket), the
    image's user can use it as the Dockerfile makes it, and not as root would leave it."""
    prefix = _as_image_user()
    root_owned = Path(tempfile.mkdtemp(prefix="annosync-root-"))
    try:
        for folder, expected in ((data_dir, "storage: ok"), (root_owned, "storage: error")):
            env = {
                "PATH": os.environ["PATH"],
                "HOME": str(folder),
                "ANNOSYNC_DATA_DIR": str(folder),
                "ANNOSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'unused.db'}",
                "ANNOSYNC_STORAGE_URL": f"file://{folder}/bucket",
                "REDIS_URL": "redis://127.0.0.1:9/0",
            }
            done = subprocess.run(
                [*prefix, str(REPO / ".venv/bin/annosync"), "check"],
                env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            storage = [line for line in done.stdout.splitlines() if line.startswith("storage")]
            assert storage and storage[0].startswith(expected), (folder, done.stdout, done.stderr)
    finally:
        shutil.rmtree(root_owned, ignore_errors=True)
