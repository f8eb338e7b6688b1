"""A server starting marks only dead servers' sync jobs as interrupted, not those another live
server on the same catalog is running (each server leases its jobs: bastion.leases)."""
from __future__ import annotations

from bastion.catalog.models import SyncJobRow
from bastion.server.jobs import SyncJobs
from tests.catalog.conftest import open_workspace


def _job(ws, job_id: str) -> None:
    with ws.catalog.session() as s:
        s.add(SyncJobRow(id=job_id, source=None, status="running", started_by="root", progress={}))


def test_a_starting_server_leaves_a_live_servers_job_alone(catalog_url, tmp_path):
    ws = open_workspace(tmp_path / "ws", catalog_url)
    server_a = SyncJobs(ws, in_process=True)
    _job(ws, "live0001")
    server_a._lease("live0001")  # as start() does: A runs it and renews its lease
    _job(ws, "dead0001")  # queued by a server that died: nobody renews it
    server_b = SyncJobs(ws, in_process=True)  # another server starts on the same catalog
    assert server_b.get("live0001")["status"] == "running"
    dead = server_b.get("dead0001")
    assert dead["status"] == "interrupted" and dead["error"] == "the server stopped before it finished"
    server_a._unlease("live0001")  # A finished (or died and its lease ran out): the next start may sweep it
    SyncJobs(ws, in_process=True)
    assert server_b.get("live0001")["status"] == "interrupted"
    ws.close()
