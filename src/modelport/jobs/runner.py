"""The server side of jobs: claim queued jobs and run each in a worker process.

Every ``job_poll_seconds`` (or at once when a job is created here) a server claims queued jobs
up to ``job_workers`` at a time and starts ``python -m modelport.jobs JOB_ID`` for each, with
its settings in the environment and its output in ``<home>/jobs/JOB_ID.log``. It stops a worker
whose job was asked to cancel, and marks failed a job whose worker ended without saying how
it went (killed, out of memory). Serving never waits on any of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from ..store.tables import jobs as jobs_table
from . import queue as jobs

if TYPE_CHECKING:
    from ..runtime import Runtime

log = logging.getLogger("modelport.jobs")


@dataclass
class _Running:
    job_id: int
    process: subprocess.Popen[bytes]
    log_path: Path


class JobRunner:
    """Claims and runs jobs for one server process."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.worker = jobs.worker_name()
        self.running: dict[int, _Running] = {}

    async def run(self, stop: asyncio.Event, wake: asyncio.Event) -> None:
        """Until ``stop``: poll, claim, watch; stopping ends the workers this server started."""
        while not stop.is_set():
            try:
                await self.tick()
            except Exception as exc:  # the store may be briefly away
                log.warning("job runner: %s", exc)
            wake.clear()
            waits = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
            _, pending = await asyncio.wait(
                waits, timeout=self.settings.job_poll_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
        await asyncio.to_thread(self.stop_all)

    async def tick(self) -> None:
        # Each step in a thread delays the request in flight on a serving process's CPU, and a
        # write joins a ledger group: an idle tick is one read in one thread, and no write.
        if self.running:
            await asyncio.to_thread(self._reap)
        timeout = self.settings.score_run_timeout_seconds
        queued, silent = await asyncio.to_thread(self._look, timeout)
        if silent:
            await self.runtime.writer.run(lambda c: jobs.expire_client_runs(c, timeout))
        while queued and len(self.running) < self.settings.job_workers:
            job_id = await self.runtime.writer.run(lambda c: jobs.claim(c, self.worker))
            if job_id is None:
                return
            self._start(job_id)

    def _start(self, job_id: int) -> None:
        folder = self.settings.home / "jobs"
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / f"{job_id}.log"
        env = {**os.environ, jobs.SETTINGS_ENV: self.settings.model_dump_json()}
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "modelport.jobs", str(job_id)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a signal to the server does not reach its jobs
            )
        self.running[job_id] = _Running(job_id, process, log_path)
        log.info("job %s started (pid %s)", job_id, process.pid)

    def _reap(self) -> None:
        """Stop cancelled workers; settle jobs whose worker ended without a word."""
        if not self.running:
            return
        with self.runtime.store.read() as conn:
            rows = {
                r.id: r
                for r in conn.execute(
                    sa.select(
                        jobs_table.c.id, jobs_table.c.status, jobs_table.c.cancel_requested
                    ).where(jobs_table.c.id.in_(list(self.running)))
                )
            }
        for job_id, run in list(self.running.items()):
            row = rows.get(job_id)
            code = run.process.poll()
            if code is None:
                if row is not None and row.cancel_requested:
                    run.process.terminate()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        run.process.wait(timeout=10)
                    if run.process.poll() is None:
                        run.process.kill()
                        run.process.wait()
                    self._settle(job_id, "cancelled", "cancelled on request")
                    del self.running[job_id]
                continue
            if row is not None and row.status == "running":
                tail = (
                    run.log_path.read_text(errors="replace")[-2000:]
                    if run.log_path.exists()
                    else ""
                )
                self._settle(job_id, "failed", f"the worker exited with status {code}: {tail}")
            del self.running[job_id]

    def _look(self, timeout: float) -> tuple[bool, bool]:
        """Whether a job is queued, and whether a client-run job has gone silent."""
        with self.runtime.store.read() as conn:
            return jobs.any_queued(conn), jobs.silent_client_runs(conn, timeout)

    def _settle(self, job_id: int, status: str, error: str) -> None:
        """Mark a job settled, through the writer (from a worker thread)."""
        self.runtime.writer.submit(
            lambda conn: jobs.finish(conn, job_id, status, error=error)
        ).result()

    def stop_all(self) -> None:
        """Stop the workers this server started; their jobs are marked failed (restartable)."""
        for job_id, run in list(self.running.items()):
            if run.process.poll() is None:
                run.process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    run.process.wait(timeout=10)
                if run.process.poll() is None:
                    run.process.kill()
                    run.process.wait()
                with contextlib.suppress(Exception):
                    self._settle(job_id, "failed", "the server stopped while the job ran")
        self.running.clear()
