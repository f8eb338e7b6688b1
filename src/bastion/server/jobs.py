"""Background sync jobs: one at a time, in a worker thread, with progress kept in the catalog."""
from __future__ import annotations

import builtins
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import select, update

from bastion.catalog.models import SyncJobRow, utc_iso, utcnow
from bastion.leases import claim, release

if TYPE_CHECKING:
    from bastion.workspace import Workspace

log = logging.getLogger("bastion.server.jobs")
JOB_LEASE_S = 60.0  # a job whose server renewed its lease this long ago is taken for dead
ProgressFn = Callable[[str, int, int | None], None]  # stage, advance, total


def job_dict(r: SyncJobRow) -> dict:
    return {"id": r.id, "source": r.source, "status": r.status, "started_by": r.started_by,
            "created_at": utc_iso(r.created_at), "finished_at": utc_iso(r.finished_at), "progress": r.progress or {},
            "report": r.report, "error": r.error, "upload_path": r.upload_path}


def member_view(job: dict) -> dict:
    """What a non-admin who started a job (an upload) may see: its state and the outcome of the
    file they uploaded. Never the source's other paths, its counts or errors, nor why a failed
    job failed (a message may quote other documents); an admin sees the whole job."""
    view = {k: job[k] for k in ("id", "source", "status", "started_by", "created_at", "finished_at")}
    view["progress"] = {"stage": (job["progress"] or {}).get("stage")}
    path = job.get("upload_path")
    view["upload"] = {"path": path, **_upload_outcome(job, path)} if path else None
    if job["status"] == "failed":
        view["error"] = "the sync failed; an administrator can see why in the sync job list"
    return view


def _upload_outcome(job: dict, path: str) -> dict:
    if job["status"] in ("queued", "running"):
        return {"outcome": "pending"}
    if job["status"] != "completed" or not job["report"]:
        return {"outcome": "not indexed"}
    report = job["report"]
    if any(r.get("status") == "quarantined" for r in report.get("sources") or []):
        return {"outcome": "held", "reason": "the sync was held for review; an administrator publishes it"}
    for kind in ("errors", "skipped"):
        for entry in report.get(kind) or []:
            if entry.get("file") == path:
                return {"outcome": "failed" if kind == "errors" else "skipped", "reason": entry.get("reason")}
    return {"outcome": "indexed"}


class SyncJobs:
    """Queue syncs started over the API and run them one after another."""

    def __init__(self, ws: Workspace, flush_every_s: float = 0.5, nice: int = 0, in_process: bool = False) -> None:
        """``in_process=False`` (the server's default) runs each sync as a ``bastion sync`` child process:
        its parsing and chunking do not hold this process's GIL while requests are served, it runs at
        ``nice`` as a whole, and a crash in a parser cannot take the server down. ``in_process=True``
        runs it in a thread of this process (a workspace opened with an embedder object, e.g. in tests)."""
        self.ws, self.flush_every_s, self.nice, self.in_process = ws, flush_every_s, nice, in_process
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        # each queued or running job is leased by its server, renewed while it lives: with several
        # servers on one catalog, one starting must not take the others' jobs for dead
        self.holder = f"{socket.gethostname()[:60]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._mine: set[str] = set()
        self._mine_lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._interrupt_orphans()

    def _interrupt_orphans(self) -> None:
        """Mark the unfinished jobs nobody leases (their server died) as interrupted."""
        with self.ws.catalog.session() as s:
            unfinished = list(s.scalars(select(SyncJobRow.id).where(SyncJobRow.status.in_(["queued", "running"]))))
        for job_id in unfinished:
            if claim(self.ws.catalog, f"sync-job:{job_id}", JOB_LEASE_S, self.holder):  # free: its server is gone
                self._set(job_id, status="interrupted", finished_at=utcnow(),
                          error="the server stopped before it finished")
                release(self.ws.catalog, f"sync-job:{job_id}", self.holder)

    def _lease(self, job_id: str) -> None:
        claim(self.ws.catalog, f"sync-job:{job_id}", JOB_LEASE_S, self.holder)
        with self._mine_lock:
            self._mine.add(job_id)
            if self._beat is None or not self._beat.is_alive():
                self._beat = threading.Thread(target=self._heartbeat, name="bastion-sync-lease", daemon=True)
                self._beat.start()

    def _unlease(self, job_id: str) -> None:
        with self._mine_lock:
            self._mine.discard(job_id)
        release(self.ws.catalog, f"sync-job:{job_id}", self.holder)

    def _heartbeat(self) -> None:
        """Renew this server's job leases every third of their length, while it has any."""
        while True:
            time.sleep(JOB_LEASE_S / 3)
            with self._mine_lock:
                mine = sorted(self._mine)
                if not mine:
                    self._beat = None
                    return
            for job_id in mine:
                try:
                    claim(self.ws.catalog, f"sync-job:{job_id}", JOB_LEASE_S, self.holder)
                except Exception:  # noqa: BLE001 - the catalog is away: the next beat tries again
                    log.warning("could not renew the lease of sync job %s", job_id)

    def start(self, source: str | None, user_id: str, upload_path: str | None = None) -> dict:
        """Queue a sync; ``upload_path`` names the file an upload put in ``source``."""
        if source is not None:
            self.ws.sources.get(source)
        job_id = secrets.token_hex(8)
        with self.ws.catalog.session() as s:
            row = SyncJobRow(id=job_id, source=source, status="queued", started_by=user_id, progress={},
                             upload_path=upload_path)
            s.add(row)
        self._lease(job_id)
        self._queue.put(job_id)
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._work, name="bastion-sync", daemon=True)
            self._thread.start()
        job = self.get(job_id)
        assert job is not None  # written above
        return job

    def get(self, job_id: str) -> dict | None:
        with self.ws.catalog.session() as s:
            row = s.get(SyncJobRow, job_id)
            return job_dict(row) if row else None

    def list(self, limit: int = 50) -> list[dict]:
        with self.ws.catalog.session() as s:
            newest = select(SyncJobRow).order_by(SyncJobRow.created_at.desc()).limit(limit)
            return [job_dict(r) for r in s.scalars(newest)]

    def wait(self, job_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.get(job_id)
            if job and job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.1)
        raise TimeoutError(f"sync job {job_id} still running after {timeout}s")

    def _set(self, job_id: str, **values) -> None:
        with self.ws.catalog.session() as s:
            s.execute(update(SyncJobRow).where(SyncJobRow.id == job_id).values(**values))

    def _work(self) -> None:
        if self.nice and self.in_process:
            # Linux schedules threads, and threads this one starts (the embedder's OpenMP team) inherit
            # its nice value: searches keep the CPU while a background sync takes what is left
            tid = threading.get_native_id()
            try:
                if self.nice >= 19 and hasattr(os, "SCHED_IDLE"):  # only when nothing else wants the CPU
                    os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
                else:
                    os.setpriority(os.PRIO_PROCESS, tid, self.nice)
            except (OSError, AttributeError):
                log.warning("could not lower the sync thread's priority")
        while True:
            try:
                job_id = self._queue.get(timeout=5)
            except queue.Empty:
                return
            try:
                self._run(job_id)
            finally:
                self._unlease(job_id)

    def _run(self, job_id: str) -> None:
        job = self.get(job_id)
        assert job is not None  # queued by start()
        progress: dict = {"documents_total": None, "documents_done": 0, "chunks_embedded": 0, "stage": "scan"}
        last = [0.0]

        def on_progress(stage: str, advance: int, total: int | None) -> None:
            if stage == "scan":
                if total is not None:
                    progress["documents_total"] = (progress["documents_total"] or 0) + total
                progress["documents_done"] += advance
            elif stage == "embed":
                progress["chunks_embedded"] += advance
            progress["stage"] = stage
            now = time.monotonic()
            if now - last[0] >= self.flush_every_s:
                last[0] = now
                self._set(job_id, progress=dict(progress))

        self._set(job_id, status="running")
        try:
            if self.in_process:
                reports = [r.to_dict() for r in self.ws.sync(job["source"], progress=on_progress)]
            else:
                reports = self._run_child(job["source"], on_progress)
        except Exception as exc:  # a failed job is reported, the server goes on
            log.exception("sync job %s failed", job_id)
            self._set(job_id, status="failed", finished_at=utcnow(), progress=dict(progress), error=str(exc))
            return
        from bastion.ingest.report import SyncReport

        total = SyncReport(source=job["source"] or "*")
        for r in reports:
            total.merge(SyncReport(**r))
        progress["stage"] = "done"
        self._set(job_id, status="completed", finished_at=utcnow(), progress=dict(progress),
                  report=total.to_dict() | {"sources": reports})

    def sync_threads(self) -> int:
        """Embedder threads of a child sync: ``server.sync_threads``, else ``embedder.threads``, else all
        cores but one (the other stays with the searches). ``bastion serve`` resolves the first two
        before it sets its own process's embedder to ``server.query_threads``."""
        cfg = self.ws.config
        return cfg.server.sync_threads or cfg.embedder.threads or max(1, (os.cpu_count() or 2) - 1)

    # builtins.list: in this class, ``list`` names the method above
    def _run_child(self, source: str | None, on_progress: ProgressFn) -> builtins.list[dict]:
        """``bastion sync [SOURCE] --json --progress-jsonl`` in a child process; its report dicts."""
        import json
        import subprocess
        import sys

        cmd = [sys.executable, "-m", "bastion.cli.app", "--home", str(self.ws.home), "sync", "--json",
               "--progress-jsonl", "--nice", str(min(self.nice, 19))]
        if source is not None:
            cmd.insert(cmd.index("sync") + 1, source)
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                                 env=os.environ | {"BASTION_EMBEDDER__THREADS": str(self.sync_threads())})
        assert child.stdout is not None and child.stderr is not None  # both piped
        other: list[str] = []
        for line in child.stderr:  # progress events; anything else is the error message if it fails
            try:
                event = json.loads(line)
                on_progress(event["stage"], event["advance"], event["total"])
            except (ValueError, KeyError, TypeError):
                if line.strip():
                    other.append(line.strip())
        out = child.stdout.read()
        if child.wait() not in (0, 3, 4):  # 3: quarantined, 4: some documents failed; both reported in the JSON
            message = " ".join(other[-20:]).removeprefix("error: ")
            raise RuntimeError(message or f"bastion sync exited with {child.returncode}")
        data = json.loads(out)
        return data["sources"] if "sources" in data else [data]
