"""``modelport ledger commit-time``: a minimal commit on the store's engine, timed back to
back and after gaps of work (modelport.store.commit_probe).

Run against the store the suite is configured for (SQLite, or PostgreSQL with
MODELPORT_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import make_url

from modelport.cli.main import main
from modelport.errors import InvalidInput
from modelport.settings import Settings
from modelport.store import Store, commit_probe
from tests.procs import cli_env, run_cli


def _txid(store: Store) -> int:
    with store.write_engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT txid_current()")).scalar_one())


def _folder(settings: Settings) -> Path:
    """The folder of a SQLite store's database file."""
    database = make_url(settings.store_url).database
    assert database
    return Path(database).resolve().parent


def test_commit_time_reports_each_gap_from_commits_on_the_store(
    settings: Settings, store: Store
) -> None:
    before = _txid(store) if store.dialect == "postgresql" else None
    env = cli_env(MODELPORT_STORE=settings.store_url, MODELPORT_HOME=str(settings.home))
    out = run_cli(
        ["ledger", "commit-time", "--gaps", "250,0", "--commits", "30", "--json"], env=env
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["store"] == store.dialect
    assert [g["gap_us"] for g in report["gaps"]] == [0, 250]
    for gap in report["gaps"]:
        assert gap["commits"] == 30
        assert 0 < gap["p50_ms"] <= gap["p90_ms"] <= gap["p99_ms"]
        assert gap["mean_ms"] > 0
    if store.dialect == "postgresql":
        # Every timed commit, and the untimed first one per gap, was a transaction of its own
        # on the server (the test's own two txid_current calls add two).
        assert _txid(store) - before >= 2 * (30 + 1) + 1
        assert report["sqlite_synchronous"] is None
    else:
        assert report["where"] == str(_folder(settings))
        assert report["sqlite_synchronous"] == "FULL"
        assert not list(_folder(settings).glob("commit-probe-*"))  # its database is gone
    # The file system, as this machine's sysfs tells it (None on PostgreSQL).
    assert report["ext4"] == commit_probe.journal(store)
    table = run_cli(["ledger", "commit-time", "--gaps", "0", "--commits", "5"], env=env)
    assert table.returncode == 0, table.stderr
    assert "GAP_US" in table.stdout and "P99_MS" in table.stdout
    assert "One request at a time" in table.stdout
    unjournaled = report["ext4"] is not None and not report["ext4"]["journal"]
    assert ("ext4 without a journal" in table.stdout) == unjournaled


@pytest.mark.parametrize(("task", "journaled"), [("<none>", False), ("jbd2/vdz1-8", True)])
def test_journal_reads_the_folders_device_from_sysfs(
    tmp_path: Path, task: str, journaled: bool
) -> None:
    # A sysfs of our making (the kernel's is the outside boundary): the store's folder's
    # device number links to a block device, whose ext4 directory names its journal's task.
    folder = tmp_path / "home"
    folder.mkdir()
    dev = folder.stat().st_dev
    sys_root = tmp_path / "sys"
    device = sys_root / "devices" / "virtual" / "block" / "vdz" / "vdz1"
    device.mkdir(parents=True)
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / f"{os.major(dev)}:{os.minor(dev)}").symlink_to(device)
    store = Store(f"sqlite:///{folder / 'modelport.db'}")
    try:
        assert commit_probe.journal(store, sys_root) is None  # no ext4 directory: not ext4
        (sys_root / "fs" / "ext4" / "vdz1").mkdir(parents=True)
        (sys_root / "fs" / "ext4" / "vdz1" / "journal_task").write_text(task + "\n")
        assert commit_probe.journal(store, sys_root) == {"device": "vdz1", "journal": journaled}
    finally:
        store.close()


def test_minimal_commits_commit_on_the_store_and_leave_nothing_behind(store: Store) -> None:
    if store.dialect == "postgresql":
        with commit_probe.minimal_commits(store) as commit, store.write_engine.connect() as conn:
            for _ in range(3):
                at = commit()
                # The message went to the log, and the log is on disk past it: the commit
                # waited for a flush, as a ledger commit does.
                flushed_past = conn.execute(
                    sa.text("SELECT pg_wal_lsn_diff(pg_current_wal_flush_lsn(), :at)"), {"at": at}
                ).scalar_one()
                assert flushed_past > 0
                conn.rollback()
        return
    database = make_url(store.url).database
    assert database
    folder = Path(database).parent
    with commit_probe.minimal_commits(store, sqlite_synchronous="NORMAL") as commit:
        for _ in range(3):
            commit()
        [probe] = folder.glob("commit-probe-*.db")
        with sqlite3.connect(probe) as reader:
            assert reader.execute("SELECT count(*) FROM probe").fetchone() == (3,)
            assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert not list(folder.glob("commit-probe-*"))


def test_timed_waits_each_gap_before_each_timed_commit_and_alternates_the_order() -> None:
    log: list[Any] = []
    results = commit_probe.timed(
        lambda: log.append("commit"), [0.0, 0.5], commits=2, rounds=2, wait=log.append
    )
    gap_0 = ["commit", "commit", "commit"]  # the untimed first, then two timed
    gap_half = ["commit", 0.5, "commit", 0.5, "commit"]
    assert log == [*gap_0, *gap_half, *gap_half, *gap_0]  # the second round in reverse
    assert {gap: s["commits"] for gap, s in results.items()} == {0.0: 4, 0.5: 4}
    assert all(s["mean_ms"] >= 0 and s["p50_ms"] <= s["p99_ms"] for s in results.values())


def test_an_in_memory_store_has_no_commit_to_time() -> None:
    st = Store("sqlite://")
    try:
        with pytest.raises(InvalidInput, match="in-memory"), commit_probe.minimal_commits(st):
            pass
    finally:
        st.close()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--gaps", "0,x"], "Invalid value for '--gaps': 'x' is not a number of microseconds"),
        (["--gaps=-4"], "Invalid value for '--gaps': -4 is outside 0-100000 microseconds"),
        (["--gaps", "100001"], "100001 is outside 0-100000 microseconds"),
        (["--commits", "0"], "Invalid value for '--commits'"),
        (["--commits", "10000", "--gaps", "100000"], "would spin for 1000 s; keep it under 60 s"),
        (["--store", "sqlite://"], "an in-memory SQLite store writes nothing to disk"),
    ],
)
def test_bad_input_is_refused_with_the_option_and_the_reason(
    tmp_path: Path, args: list[str], says: str
) -> None:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("MODELPORT_")}
    out = CliRunner().invoke(
        main, ["ledger", "commit-time", "--home", str(tmp_path / "home"), *args], env=unset
    )
    assert out.exit_code == 2, out.output
    assert says in out.stderr
    assert not (tmp_path / "home" / "modelport.db").exists()  # refused before the store opened


def test_a_probe_database_left_by_a_killed_run_is_reused_and_removed(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'modelport.db'}")
    left = tmp_path / f"commit-probe-{os.getpid()}.db"  # as a run killed mid-way leaves it
    with sqlite3.connect(left) as old:
        old.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
    old.close()
    try:
        with commit_probe.minimal_commits(store) as commit:
            commit()
        assert not left.exists()
    finally:
        store.close()
