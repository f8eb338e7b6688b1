"""``bastion init``, ``bastion sync``, ``bastion rebuild`` and ``bastion search``: the workspace and its index."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_home, open_ws
from bastion.cli.output import console, emit_json, error, friendly_errors, styled, sync_progress
from bastion.core.errors import ConfigError

app = typer.Typer()


@app.command()
def init(directory: Annotated[Optional[Path], typer.Argument(help="Where to create it.")] = None) -> None:
    """Create a workspace: bastion.toml plus a data folder."""
    from bastion.workspace import Workspace

    with friendly_errors():
        ws = Workspace.init(directory or cli_home())
    console.print(styled("Created workspace at ", (str(ws.home), "bold"), f"  (config: {ws.home / 'bastion.toml'})"))


@app.command()
def sync(source: Annotated[Optional[str], typer.Argument(help="Source name (default: all).")] = None,
         as_json: JsonOpt = False,
         progress_jsonl: Annotated[bool, typer.Option("--progress-jsonl", hidden=True,
                                                      help="Progress as JSON lines on stderr (for the server).")] = False,
         nice: Annotated[int, typer.Option("--nice", min=0, max=19, help="Run at this CPU priority (nice value).")] = 0,
         accept: Annotated[bool, typer.Option("--accept", help="Publish even if the checks would quarantine "
                                                               "this sync (one named source).")] = False,
         ) -> None:
    """Bring the index up to date with the sources (incremental, crash-safe, checked before publishing).

    Exit code 3: a sync was quarantined (not published; see `bastion monitor status`)."""
    import os

    if nice:
        os.nice(nice)  # before the embedder starts its threads, which inherit it
    if accept and not source:
        error("--accept publishes one quarantined source: name it (bastion sync SOURCE --accept)")
        raise typer.Exit(2)
    with friendly_errors():
        ws = open_ws()
        if progress_jsonl:
            import json
            import sys

            def progress(stage: str, advance: int, total: int | None) -> None:
                sys.stderr.write(json.dumps({"stage": stage, "advance": advance, "total": total}) + "\n")
                sys.stderr.flush()

            reports = ws.sync(source, progress=progress, accept=accept)
        else:
            with sync_progress(not as_json) as bar:
                reports = ws.sync(source, progress=bar, accept=accept)
        if ws.monitor.notifier is not None:  # webhooks go out in the background; give them a moment
            ws.monitor.notifier.wait(30)
    quarantined = any(r.status == "quarantined" for r in reports)
    if as_json:
        if len(reports) == 1:
            emit_json(reports[0].to_dict())
        else:
            from bastion.ingest.report import SyncReport

            total = SyncReport(source="*")
            for r in reports:
                total.merge(r)
            emit_json(total.to_dict() | {"status": "quarantined" if quarantined else "completed",
                                         "sources": [r.to_dict() for r in reports]})
        if quarantined:
            raise typer.Exit(3)
        return
    from bastion.cli.monitor import print_alerts

    for r in reports:
        if r.status == "quarantined":
            console.print(styled((f"{r.source}: QUARANTINED", "bold red"),
                                 " — nothing was published, the previous state stays live:"))
            for why in r.quarantined:
                console.print(styled(f"  {why}"))
            console.print(styled(f"  publish it anyway with: bastion sync {r.source} --accept"))
            continue
        console.print(styled((r.source, "bold"), f": {r.documents_added} added, {r.documents_updated} updated, "
                             f"{r.documents_acl_changed} ACL changed, {r.documents_deleted} deleted, "
                             f"{r.documents_unchanged} unchanged, {r.documents_failed} failed; "
                             f"{r.chunks_embedded} chunks embedded in {r.seconds:.1f}s"))
        for e in r.errors:
            if e["file"] is None:
                console.print(styled("  ", ("warning", "yellow"), f": {e['reason']}"))
            else:
                console.print(styled("  ", ("skipped", "yellow"), f" {e['file']}: {e['reason']}"))
        for e in r.skipped:  # not documents at all: links, pipes, a SQL row repeating an id
            console.print(styled("  ", ("skipped", "yellow"), f" {e['file']}: {e['reason']}"))
    alerts = [a for r in reports for a in r.alerts]
    if alerts:
        print_alerts(alerts)
    if quarantined:
        raise typer.Exit(3)


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
           as_json: JsonOpt = False) -> None:
    """Hybrid search as a user: only documents they may read are considered."""
    with friendly_errors():
        if mode not in (None, "hybrid", "dense", "bm25"):
            raise ConfigError(f"--mode {mode!r}: use hybrid, dense or bm25")
        ws = open_ws()
        hits = ws.search(query, ws.principal(as_user), k, source=source, mode=mode)
    if as_json:
        emit_json([h.to_dict() for h in hits])
        return
    if not hits:
        console.print(styled(f"no results that {as_user} may read"))
    for i, h in enumerate(hits, 1):
        where = h.path + (f" p.{h.page}" if h.page else "") + (f" § {h.section}" if h.section else "")
        console.print(styled((f"{i}.", "bold"), " ", (where, "cyan"), f"  (score {h.score:.4f})"))
        snippet = " ".join(h.text.split())
        console.print(styled(f"   {snippet[:240]}{'…' if len(snippet) > 240 else ''}"))
