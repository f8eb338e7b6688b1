"""``bastion tune …``: datasets with an audience, LoRA training, promotion and rollback of adapters."""
from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, open_ws
from bastion.cli.output import Table, console, emit_json, err_console, friendly_errors, styled

app = typer.Typer(name="tune", help="Fine-tune the model on your documents, for an audience that may read them.",
                  no_args_is_help=True)
data_app = typer.Typer(name="data", help="Training datasets: build, list, show.", no_args_is_help=True)
app.add_typer(data_app)


@data_app.command("build")
def build(name: str,
          audience: Annotated[str, typer.Option(help="Who the adapter will serve: user:U, group:G or everyone, comma-separated.")],
          source: Annotated[Optional[str], typer.Option(help="Grounded examples from this source's documents.")] = None,
          eval_set: Annotated[Optional[list[str]], typer.Option("--set", help="Examples from a question set (repeat).")] = None,
          feedback: Annotated[bool, typer.Option(help="Examples from users' rated answers.")] = False,
          file: Annotated[Optional[list[Path]], typer.Option(help="A JSONL file of chat / instruction examples (repeat).")] = None,
          files_ok: Annotated[bool, typer.Option("--files-ok", help="The files' content may be seen by the whole audience.")] = False,
          count: Annotated[int, typer.Option(min=1, max=100_000, help="Examples from the source.")] = 200,
          val_share: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of documents held out for evaluation.")] = 0.1,
          seed: int = 0,
          replace: Annotated[bool, typer.Option(help="Replace a dataset of the same name.")] = False,
          as_json: JsonOpt = False) -> None:
    """Build a dataset whose every example its audience may read (the others are dropped and counted)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from bastion.tuning.guard import parse_audience

    with friendly_errors():
        ws = open_ws()
        with Progress(TextColumn("examples"), BarColumn(), MofNCompleteColumn(), console=err_console, transient=True,
                      disable=as_json) as bar:
            task = bar.add_task("x", total=None)
            card = ws.tuning.datasets.build(name, source=source, sets=eval_set or [], feedback=feedback,
                                            files=file or [], audience=parse_audience(audience), count=count,
                                            val_share=val_share, seed=seed, replace=replace, acknowledge_files=files_ok,
                                            progress=lambda i, n: bar.update(task, completed=i, total=n))
        cli_audit(ws, "tune.data.build", name, {"audience": card.audience, "examples": card.examples,
                                                 "dropped_acl": card.dropped_acl})
    data = card.to_dict()
    if as_json:
        emit_json(data)
        return
    console.print(styled("dataset ", (name, "bold"), f": {card.examples} examples ({card.train} train, {card.val} "
                         f"held out) for {', '.join(card.audience)}"))
    console.print(styled(f"  dropped: {card.dropped_acl} outside the audience's access, {card.dropped_check} failing "
                         f"the citation checks, {card.dropped_quality} by cleaning"))
    for note in card.notes:
        console.print(styled((f"note: {note}", "dim")))


@data_app.command("list")
def list_datasets(as_json: JsonOpt = False) -> None:
    """Stored datasets."""
    with friendly_errors():
        cards = open_ws().tuning.datasets.list()
    if as_json:
        emit_json({"datasets": [c.to_dict() for c in cards]})
        return
    table = Table("dataset", "audience", "examples", "train", "held out", "dropped (access)", "created")
    for c in cards:
        table.add_row(c.name, ", ".join(c.audience), str(c.examples), str(c.train), str(c.val), str(c.dropped_acl),
                      c.created_at[:16])
    console.print(table)


@data_app.command("show")
def show_dataset(name: str, as_json: JsonOpt = False) -> None:
    """A dataset's card: counts, cleaning report, and every document version it holds text of."""
    with friendly_errors():
        card = open_ws().tuning.datasets.get(name)
    if as_json:
        emit_json(card.to_dict())
        return
    console.print(styled((name, "bold"), f" for {', '.join(card.audience)}: {card.examples} examples"))
    for d in card.documents:
        console.print(styled(f"  {d['path']}  version {str(d.get('version_id'))[:12]}  acl {', '.join(d.get('acl') or [])}"))


@app.command("run")
def run(dataset: str,
        adapter: Annotated[Optional[str], typer.Option(help="The adapter's name (default: DATASET-N).")] = None,
        max_steps: Annotated[Optional[int], typer.Option(min=1, help="Stop after this many optimizer steps.")] = None,
        max_minutes: Annotated[Optional[float], typer.Option(min=0.1, help="Stop after this much time.")] = None,
        epochs: Annotated[float, typer.Option(min=0.01, max=100)] = 1.0,
        rank: Annotated[int, typer.Option(min=1, max=256)] = 16,
        lr: Annotated[float, typer.Option(min=1e-6, max=1.0)] = 2e-4,
        batch: Annotated[int, typer.Option(min=1, max=256)] = 4,
        seq: Annotated[int, typer.Option(min=64, max=8192, help="Tokens per example at most.")] = 512,
        layers: Annotated[Optional[int], typer.Option(
            min=1, help="Adapt only the last N layers (cheaper steps on a CPU).")] = None,
        seed: int = 0,
        device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
        evaluate: Annotated[bool, typer.Option(help="Evaluate against the base model afterwards.")] = True,
        eval_limit: Annotated[Optional[int], typer.Option(min=1, help="Held-out questions at most.")] = None,
        as_json: JsonOpt = False) -> None:
    """Train a LoRA adapter on a dataset (resumes after a crash), export it, evaluate it; it serves once promoted."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from bastion.tuning.train import TrainConfig

    cfg = TrainConfig(rank=rank, alpha=2 * rank, lr=lr, batch_size=batch, max_seq_tokens=seq, epochs=epochs,
                      max_steps=max_steps, max_seconds=max_minutes * 60 if max_minutes else None, seed=seed, device=device,
                      layers=layers)
    with friendly_errors():
        ws = open_ws()
        with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True,
                      disable=as_json) as bar:
            task = bar.add_task("training", total=None)

            def step(done: int, total: int, loss: float) -> None:
                bar.update(task, completed=done, total=total, description=f"training · loss {loss:.3f}")

            result = ws.tuning.run(dataset, cfg, adapter=adapter, evaluate=evaluate, eval_limit=eval_limit, progress=step)
        cli_audit(ws, "tune.run", result["adapter"], {"dataset": dataset, "audience": result["audience"],
                                                       "steps": result["steps"], "sha256": result["sha256"]})
    if as_json:
        emit_json(result)
        return
    t = result["training"]
    console.print(styled("adapter ", (result["adapter"], "bold"), f" for {', '.join(result['audience'])}: "
                         f"{result['steps']} steps in {t['seconds']:.0f} s ({t['stopped']}), loss "
                         f"{(t['train_loss_first'] or ['?'])[0]} → {(t['train_loss_last'] or ['?'])[0]}, sha256 {result['sha256'][:16]}…"))
    _print_evaluation(result.get("evaluation"))
    console.print(styled((f"it serves nobody yet: bastion tune promote {result['adapter']}", "dim")))


def _print_evaluation(ev: dict[str, Any] | None) -> None:
    if not ev:
        return
    held = ev.get("heldout")
    if held:
        table = Table("held-out metric", "base", "adapter")
        for m in ("groundedness", "contains", "f1", "citation_accuracy", "abstention_recall_unanswerable", "leaks",
                  "ttft_p95_ms"):
            table.add_row(m, *(("–" if x.get(m) is None else f"{x[m]:.2f}" if isinstance(x[m], float) else str(x[m]))
                               for x in (held["base"], held["adapter"])))
        console.print(table)
    f = ev.get("forgetting") or {}
    if f:
        console.print(styled(f"forgetting set: {f.get('retained')} of the {f.get('base_correct')} general questions the "
                             "base model answers right are still right"))


@app.command("list")
def list_adapters(as_json: JsonOpt = False) -> None:
    """Adapters, their audience and status (candidate, active, retired, withdrawn)."""
    with friendly_errors():
        adapters = open_ws().adapters.all()
    if as_json:
        emit_json({"adapters": [a.to_dict() for a in adapters]})
        return
    table = Table("adapter", "base", "audience", "status", "dataset", "steps", "created")
    for a in adapters:
        status = a.status + (f" ({a.status_reason})" if a.status_reason else "")
        table.add_row(a.name, a.base_model, ", ".join(a.audience), status, a.dataset or "",
                      str(a.training.get("steps", "")), (a.created_at or "")[:16])
    console.print(table)


@app.command("promote")
def promote(adapter: str,
            tolerance: Annotated[float, typer.Option(min=0, max=1)] = 0.02,
            force: Annotated[bool, typer.Option(help="Promote even if it is not better (audited).")] = False,
            as_json: JsonOpt = False) -> None:
    """Make an adapter serve its audience if it beats the base model and forgets nothing beyond the tolerance."""
    with friendly_errors():
        ws = open_ws()
        decision = ws.tuning.promote(adapter, tolerance=tolerance, force=force, by=f"cli:{getpass.getuser()}")
        cli_audit(ws, "tune.promote", adapter, decision, outcome="ok" if decision["promoted"] else "denied")
    if as_json:
        emit_json(decision)
    else:
        for r in decision["reasons"]:
            console.print(styled((f"  {r}", "yellow")))
        if decision["promoted"]:
            console.print(styled((f"{adapter} now answers {', '.join(decision['audience'])}"
                                  + (" (forced)" if decision["forced"] else ""), "bold green")))
        else:
            console.print(styled(("not promoted; --force to promote anyway (audited)", "bold red")))
    if not decision["promoted"]:
        raise typer.Exit(1)


@app.command("rollback")
def rollback(adapter: Annotated[Optional[str], typer.Argument(help="The active adapter (default: the last promoted).")] = None,
             as_json: JsonOpt = False) -> None:
    """Retire the active adapter and bring back the one it replaced (or the base model)."""
    with friendly_errors():
        ws = open_ws()
        result = ws.adapters.rollback(adapter, by=f"cli:{getpass.getuser()}")
        cli_audit(ws, "tune.rollback", result["retired"], result)
    if as_json:
        emit_json(result)
    else:
        console.print(styled(f"retired {result['retired']}; "
                             + (f"{result['restored']} serves again" if result["restored"] else "the base model answers")))


@app.command("accept")
def accept(adapter: str, as_json: JsonOpt = False) -> None:
    """Return a withdrawn adapter to service after reviewing what changed in its training documents."""
    with friendly_errors():
        ws = open_ws()
        a = ws.adapters.accept(adapter, by=f"cli:{getpass.getuser()}")
        cli_audit(ws, "tune.accept", adapter, {"status": a.status})
    if as_json:
        emit_json(a.to_dict())
    else:
        console.print(styled(f"{adapter} is {a.status} again"))
