"""The Helm chart with several servers: with the catalog and the index on PostgreSQL the servers are a
Deployment of N pods without a volume, the sync worker a CronJob that runs one ``bastion sync`` at a
time, and the Service reaches only the servers; several servers on the SQLite catalog or the LanceDB
folder are refused at render time, naming the value to set.

Rendered offline and linted by Helm itself (helm-python-sdk), each manifest checked against the
Kubernetes schemas (kubernetes-validate), as tests/deploy/test_deploy_files.py does for the default."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import bastion.cli.app as cli
from bastion.core.config import load_config
from bastion.workspace import Workspace

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "bastion"
CATALOG_URL = "postgresql+psycopg://bastion@db.example:5432/bastion"
SCALED = {"replicas": 3, "catalog": {"url": CATALOG_URL, "passwordSecret": {"name": "bastion-db", "key": "password"}},
          "store": {"backend": "pgvector"},
          "documents": [{"name": "handbook", "volume": {"nfs": {"server": "nfs.example", "path": "/handbook"}}}],
          "ingress": {"enabled": True, "host": "bastion.example.com"}, "env": {"BASTION_SEARCH__K": "20"},
          "nodeSelector": {"disk": "ssd"}}


def _render(values: dict | None) -> dict[str, dict]:
    """kind -> the manifest, of the chart rendered by Helm."""
    from helm_python.chart import Chart

    manifests = Chart.load(CHART).render(values, name="bastion", namespace="default")
    docs = [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]
    assert len({d["kind"] for d in docs}) == len(docs)
    return {d["kind"]: d for d in docs}


def _render_error(values: dict) -> str:
    """The message of the template ``fail`` that refuses ``values``."""
    from helm_python import HelmRenderError

    with pytest.raises(HelmRenderError) as caught:
        _render(values)
    return str(caught.value)


def _command(argv: list[str]) -> Any:
    """``bastion ...`` parsed by the CLI's own parser: raises on an unknown command or option."""
    command: Any = typer.main.get_command(cli.app)
    args = list(argv[1:])
    while hasattr(command, "commands"):
        command = command.get_command(typer.Context(command), args.pop(0))
        assert command is not None, argv
    command.make_context(argv[0], args, resilient_parsing=False)
    return command


def test_scaled_out_chart_lints_and_is_valid_kubernetes():
    import kubernetes_validate
    from helm_python.chart import lint

    report = lint(CHART, SCALED, strict=True)
    findings = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    assert report["total_charts_linted"] == 1 and findings == [], findings
    docs = _render(SCALED)
    assert set(docs) == {"Deployment", "CronJob", "Service", "Ingress"}  # no StatefulSet, no volume claim
    version = kubernetes_validate.latest_version()
    for doc in docs.values():
        kubernetes_validate.validate(doc, version, strict=True)


def test_servers_are_n_replicas_without_state_and_the_service_reaches_only_them():
    docs = _render(SCALED)
    deployment, cron, service = docs["Deployment"], docs["CronJob"], docs["Service"]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert {v["name"]: "emptyDir" in v for v in pod["volumes"]} == {"tmp": True, "workspace": True,
                                                                   "documents-handbook": False}
    [server] = pod["containers"]
    assert _command(server["args"]).name == "serve"
    selector = service["spec"]["selector"]
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert selector == deployment["spec"]["selector"]["matchLabels"]
    assert not selector.items() <= job_pod["metadata"]["labels"].items()  # no HTTP traffic to a sync pod
    assert docs["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == \
        service["metadata"]["name"]


def test_one_sync_worker_runs_bastion_sync_with_the_servers_settings(tmp_path, monkeypatch):
    docs = _render(SCALED)
    cron = docs["CronJob"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid" and cron["spec"]["schedule"] == "0 * * * *"
    job_pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [sync] = job_pod["containers"]
    assert _command(sync["args"]).name == "sync"
    [server] = docs["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert sync["env"] == server["env"] and sync["volumeMounts"] == server["volumeMounts"]
    assert job_pod["nodeSelector"] == {"disk": "ssd"}
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
    assert secrets == {"BASTION_DB_PASSWORD": {"name": "bastion-db", "key": "password"}}
    # the variables configure a workspace as intended: what each pod's bastion.toml is laid under
    Workspace.init(tmp_path / "ws").close()
    for e in server["env"]:
        monkeypatch.setenv(e["name"], e.get("value", "secret"))
    config = load_config(tmp_path / "ws")
    assert (config.catalog.url, config.catalog.password_env) == (CATALOG_URL, "BASTION_DB_PASSWORD")
    assert config.store.backend == "pgvector" and config.store.url is None  # the catalog's database
    assert config.search.k == 20
    assert _render({**SCALED, "sync": {"schedule": ""}}).keys() == {"Deployment", "Service", "Ingress"}


def test_several_servers_on_state_in_one_pods_volume_are_refused():
    on_sqlite = _render_error({"replicas": 2})
    assert "replicas > 1 needs the catalog on PostgreSQL (catalog.url)" in on_sqlite
    on_lance = _render_error({"replicas": 2, "catalog": {"url": CATALOG_URL}})
    assert "replicas > 1 needs store.backend pgvector" in on_lance
    store_only = _render_error({"replicas": 2, "store": {"backend": "pgvector", "url": CATALOG_URL}})
    assert "catalog.url" in store_only  # the index alone on PostgreSQL: the catalog is still a file
    assert "PostgreSQL URL" in _render_error({"catalog": {"url": "sqlite:////var/lib/bastion/c.db"}})
    assert "store.url" in _render_error({"store": {"backend": "pgvector"}})
    # positive controls: the same replicas once both are on PostgreSQL; one replica on SQLite as before
    assert _render({"replicas": 2, "catalog": {"url": CATALOG_URL}, "store": {"backend": "pgvector"}})[
        "Deployment"]["spec"]["replicas"] == 2
    single = _render({"replicas": 1})
    assert set(single) == {"StatefulSet", "Service"} and single["StatefulSet"]["spec"]["replicas"] == 1


def test_a_store_in_its_own_database_gets_its_url_and_password(tmp_path, monkeypatch):
    store_url = "postgresql+psycopg://chunks@vectors.example:5432/chunks"
    values = {**SCALED, "store": {"backend": "pgvector", "url": store_url,
                                  "passwordSecret": {"name": "bastion-vectors", "key": "pw"}}}
    [server] = _render(values)["Deployment"]["spec"]["template"]["spec"]["containers"]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in server["env"] if "valueFrom" in e}
    assert secrets["BASTION_STORE_PASSWORD"] == {"name": "bastion-vectors", "key": "pw"}
    Workspace.init(tmp_path / "ws").close()
    for e in server["env"]:
        monkeypatch.setenv(e["name"], e.get("value", "secret"))
    config = load_config(tmp_path / "ws")
    assert (config.store.url, config.store.password_env) == (store_url, "BASTION_STORE_PASSWORD")
    assert config.catalog.url == CATALOG_URL
