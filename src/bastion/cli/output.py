"""Human output by default, JSON for scripts; errors go to stderr with exit code 2."""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bastion.core.errors import BastionError

console = Console()
err_console = Console(stderr=True)


def emit_json(data) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, indent=2, default=str) + "\n")


@contextmanager
def friendly_errors():
    try:
        yield
    except BastionError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@contextmanager
def sync_progress(enabled: bool):
    """A progress bar on stderr: documents scanned and chunks embedded."""
    if not enabled:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, advance: int, total: int | None) -> None:
            label = {"scan": "documents", "embed": "chunks embedded"}.get(stage, stage)
            if stage not in tasks:
                tasks[stage] = bar.add_task(label, total=total)
            elif total is not None:
                bar.update(tasks[stage], total=total, completed=0)
            if advance:
                bar.advance(tasks[stage], advance)

        yield update
