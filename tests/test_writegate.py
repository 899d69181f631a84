"""The SQLite write gate: one writer at a time across processes, released with the
transaction, an error (not a hang) when a writer never finishes."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from sync import db, writegate

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def database(tmp_path):
    path = tmp_path / "gate.db"
    engine = db.make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT)")
    return path, engine


def gate_is_free(path: Path) -> bool:
    fd = os.open(f"{path}-gate", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing drops a lock this check took


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_a_write_transaction_holds_the_gate_until_it_ends(database, end):
    path, engine = database
    conn = engine.connect()
    conn.execute(text("SELECT count(*) FROM t")).scalar()
    assert gate_is_free(path)  # reading takes nothing
    conn.execute(text("INSERT INTO t (who) VALUES ('a')"))
    conn.execute(text("INSERT INTO t (who) VALUES ('b')"))
    assert not gate_is_free(path)
    getattr(conn, end)()
    assert gate_is_free(path)
    conn.close()


def test_a_write_that_fails_outside_a_transaction_gives_the_gate_back(database):
    path, engine = database
    raw = engine.raw_connection()
    with pytest.raises(sqlite3.OperationalError):
        raw.cursor().execute("INSERT INTO missing (x) VALUES (1)")
    assert gate_is_free(path)
    raw.close()


def test_a_writer_stuck_in_its_transaction_costs_others_an_error_not_a_hang(database, monkeypatch):
    path, engine = database
    monkeypatch.setattr(writegate, "TIMEOUT_S", 0.3)
    stuck = os.open(f"{path}-gate", os.O_RDWR)
    fcntl.flock(stuck, fcntl.LOCK_EX)  # another writer that never commits
    try:
        with pytest.raises(Exception, match="database is locked"), engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO t (who) VALUES ('late')")
    finally:
        os.close(stuck)
    with engine.begin() as conn:  # and the gate works again once the writer is gone
        conn.exec_driver_sql("INSERT INTO t (who) VALUES ('after')")


WRITER = """
import sys
from sync import db
engine = db.make_engine(sys.argv[1])
with engine.connect() as conn:
    conn.exec_driver_sql("PRAGMA busy_timeout=0")  # any overlap of writers fails at once
    for n in range(int(sys.argv[3])):
        conn.exec_driver_sql("INSERT INTO t (who) VALUES (?)", (sys.argv[2],))
        conn.exec_driver_sql("UPDATE t SET who = who WHERE id = 1")
        conn.commit()
"""


def test_writers_of_several_processes_never_meet_sqlites_lock(database):
    path, _engine = database
    url = f"sqlite:///{path}"
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{n}", "2000"], cwd=ROOT)
        for n in range(3)
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0]
    with sqlite3.connect(path) as check:
        assert check.execute("SELECT count(*) FROM t").fetchone() == (6000,)


def test_a_forked_child_waits_for_its_parents_gate(database, monkeypatch):
    path, engine = database
    monkeypatch.setattr(writegate, "TIMEOUT_S", 0.3)
    conn = engine.connect()
    conn.exec_driver_sql("INSERT INTO t (who) VALUES ('parent')")  # the parent holds it
    pid = os.fork()
    if pid == 0:  # the child shares the parent's open gate file: it must not pass with it
        try:
            writegate.gate_for(str(path)).acquire()
        except sqlite3.OperationalError:
            os._exit(0)
        os._exit(1)
    _, status = os.waitpid(pid, 0)
    conn.commit()
    conn.close()
    assert os.waitstatus_to_exitcode(status) == 0


def test_the_connections_own_execute_passes_the_gate_too(database):
    path, engine = database
    raw = engine.raw_connection().dbapi_connection
    raw.execute("INSERT INTO t (who) VALUES ('direct')")  # not through cursor()
    assert not gate_is_free(path)
    raw.commit()
    assert gate_is_free(path)
    raw.close()
