"""``bastion init``, ``bastion sync``, ``bastion rebuild`` and ``bastion search``: the workspace and its index."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_home, for_one_query, open_ws
from bastion.cli.empty import empty_index_hint, print_hint
from bastion.cli.output import console, emit_json, error, friendly_errors, styled, sync_progress
from bastion.cli.served import served_search
from bastion.core.errors import ConfigError
from bastion.core.home import resolve_home

if TYPE_CHECKING:
    from bastion.ingest.report import SyncReport
    from bastion.workspace import Workspace

app = typer.Typer()


@app.command()
def init(directory: Annotated[Optional[Path], typer.Argument(help="Where to create it.")] = None) -> None:
    """Create a workspace: bastion.toml plus a data folder."""
    from bastion.workspace import Workspace

    with friendly_errors():
        ws = Workspace.init(directory or cli_home())
    console.print(styled("Created workspace at ", (str(ws.home), "bold"), f"  (config: {ws.home / 'bastion.toml'})"))


EXIT_QUARANTINED = 3  # a sync was not published
EXIT_DOCUMENTS_FAILED = 4  # published, but some documents failed (listed); the rest is indexed


@app.command()
def sync(source: Annotated[Optional[str], typer.Argument(help="Source name (default: all).")] = None,
         as_json: JsonOpt = False,
         progress_jsonl: Annotated[bool, typer.Option("--progress-jsonl", hidden=True,
                                                      help="Progress as JSON lines on stderr (for the server).")] = False,
         nice: Annotated[int, typer.Option("--nice", min=0, max=19, help="Run at this CPU priority (nice value).")] = 0,
         accept: Annotated[bool, typer.Option("--accept", help="Publish even if the checks would quarantine "
                                                               "this sync (one named source).")] = False,
         executor: Annotated[Optional[str], typer.Option("--executor", help="Where documents are parsed, chunked and "
                                                         "embedded: local or ray (default: ingest.executor).")] = None,
         ) -> None:
    """Bring the index up to date with the sources (incremental, crash-safe, checked before publishing).

    Exit codes: 0 every document is indexed, unchanged, or skipped by design (links, pipes, sockets,
    device files, empty files, unsupported types); 3 a sync was quarantined (nothing published; see
    `bastion monitor status`); 4 published, but some documents failed (unreadable, corrupt, encrypted,
    no text, over the size limit, under an invalid .bastion-acl: each is listed, the rest is indexed);
    2 a usage or configuration error, or a source that cannot be read at all; 130 / 143 stopped by
    Ctrl-C / SIGTERM (what was committed stays; the next sync does the rest)."""
    import os

    from bastion.cli.stopping import SyncStopper
    from bastion.core.errors import SyncInterrupted

    if nice:
        os.nice(nice)  # before the embedder starts its threads, which inherit it
    if executor not in (None, "local", "ray"):
        error(f"--executor {executor!r}: use local or ray")
        raise typer.Exit(2)
    if accept and not source:
        error("--accept publishes one quarantined source: name it (bastion sync SOURCE --accept)")
        raise typer.Exit(2)
    with friendly_errors(), SyncStopper() as stopper:
        ws = open_ws()
        if executor:
            ws.config.ingest.executor = "ray" if executor == "ray" else "local"
        try:
            if progress_jsonl:
                reports = stopper.run(lambda: ws.sync(source, progress=_jsonl_progress, accept=accept,
                                                      control=stopper.control))
            else:
                with sync_progress(not as_json) as bar:
                    reports = stopper.run(lambda: ws.sync(source, progress=bar, accept=accept,
                                                          control=stopper.control))
        except SyncInterrupted:
            stopper.finish(abandon=lambda: _abandon(ws, stopper.control.run_id))
        if ws.monitor.notifier is not None:  # webhooks go out in the background; give them a moment
            ws.monitor.notifier.wait(30)
    if as_json:
        _emit_reports(reports)
    else:
        _print_reports(reports)
    if any(r.status == "quarantined" for r in reports):
        raise typer.Exit(EXIT_QUARANTINED)
    if any(r.documents_failed for r in reports):
        raise typer.Exit(EXIT_DOCUMENTS_FAILED)


def _abandon(ws: Workspace, run_id: int | None) -> None:
    from bastion.ingest.pipeline import SyncPipeline

    if run_id is not None:
        SyncPipeline.abandon_run(ws.catalog, run_id)


def _jsonl_progress(stage: str, advance: int, total: int | None) -> None:
    import json
    import sys

    sys.stderr.write(json.dumps({"stage": stage, "advance": advance, "total": total}) + "\n")
    sys.stderr.flush()


def _emit_reports(reports: list[SyncReport]) -> None:
    if len(reports) == 1:
        emit_json(reports[0].to_dict())
        return
    from bastion.ingest.report import SyncReport

    total = SyncReport(source="*")
    for r in reports:
        total.merge(r)
    quarantined = any(r.status == "quarantined" for r in reports)
    emit_json(total.to_dict() | {"status": "quarantined" if quarantined else "completed",
                                 "sources": [r.to_dict() for r in reports]})


def _print_reports(reports: list[SyncReport]) -> None:
    from bastion.cli.monitor import print_alerts

    for r in reports:
        if r.status == "quarantined":
            console.print(styled((f"{r.source}: QUARANTINED", "bold red"),
                                 " — nothing was published, the previous state stays live:"))
            for why in r.quarantined:
                console.print(styled(f"  {why}"))
            console.print(styled(f"  publish it anyway with: bastion sync {r.source} --accept"))
            continue
        rechunked = f"{r.documents_rechunked} re-chunked, " if r.documents_rechunked else ""
        console.print(styled((r.source, "bold"), f": {r.documents_added} added, {r.documents_updated} updated, "
                             f"{r.documents_acl_changed} ACL changed, {r.documents_deleted} deleted, {rechunked}"
                             f"{r.documents_unchanged} unchanged, {r.documents_failed} failed; "
                             f"{r.chunks_embedded} chunks embedded in {r.seconds:.1f}s"))
        for e in r.errors:
            if e["file"] is None:
                console.print(styled("  ", ("warning", "yellow"), f": {e['reason']}"))
            else:
                console.print(styled("  ", ("failed", "red"), f" {e['file']}: {e['reason']}"))
        for e in r.skipped:  # not documents to index: links, pipes, empty files, a SQL row repeating an id
            console.print(styled("  ", ("skipped", "yellow"), f" {e['file']}: {e['reason']}"))
    alerts = [a for r in reports for a in r.alerts]
    if alerts:
        print_alerts(alerts)


@app.command()
def rebuild(as_json: JsonOpt = False) -> None:
    """Drop the index and rebuild it from all sources (after changing the embedder)."""
    with friendly_errors():
        ws = open_ws()
        with sync_progress(not as_json) as progress:
            reports = ws.rebuild_index(progress=progress)
    if as_json:
        emit_json([r.to_dict() for r in reports])
        return
    for r in reports:
        console.print(styled((r.source, "bold"), f": {r.documents_added} re-indexed, {r.documents_failed} failed, "
                             f"{r.chunks_embedded} chunks embedded in {r.seconds:.1f}s"))


@app.command()
def search(query: str,
           as_user: Annotated[str, typer.Option("--as", help="Search as this user (required).")],
           k: Annotated[Optional[int], typer.Option("--k", min=1, max=1000, help="Number of results.")] = None,
           source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
           mode: Annotated[Optional[str], typer.Option(help="hybrid | dense | bm25")] = None,
           as_json: JsonOpt = False,
           local: Annotated[bool, typer.Option("--local", help="Search in this process even while a "
                                                               "`bastion serve` of the workspace runs.")] = False,
           ) -> None:
    """Hybrid search as a user: only documents they may read are considered.

    While a `bastion serve` of this workspace runs with the same configuration, it does the search
    (the same results, without loading the index and the model here)."""
    with friendly_errors():
        if mode not in (None, "hybrid", "dense", "bm25"):
            raise ConfigError(f"--mode {mode!r}: use hybrid, dense or bm25")
        hits = None if local else served_search(resolve_home(cli_home()), query, as_user, k, source, mode)
        if hits is None:
            ws = open_ws()
            for_one_query(ws)
            hits = ws.search(query, ws.principal(as_user), k, source=source, mode=mode)
    with friendly_errors():
        hint = None if hits else empty_index_hint(source)
    if as_json:
        emit_json([h.to_dict() for h in hits])
        if hint:
            print_hint(hint)
        return
    if hint:
        print_hint(hint)
    elif not hits:
        console.print(styled(f"no results that {as_user} may read"))
    for i, h in enumerate(hits, 1):
        where = h.path + (f" p.{h.page}" if h.page else "") + (f" § {h.section}" if h.section else "")
        console.print(styled((f"{i}.", "bold"), " ", (where, "cyan"), f"  (score {h.score:.4f})"))
        snippet = " ".join(h.text.split())
        console.print(styled(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}"))
