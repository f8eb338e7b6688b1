"""``bastion eval set …``, ``bastion eval config …`` and the feedback candidates: what an
evaluation asks, and with which settings."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, cli_audit, csv_list, open_ws
from bastion.cli.output import Table, console, emit_json, err_console, friendly_errors, styled

set_app = typer.Typer(name="set", help="Question sets: import, generate, list, show.", no_args_is_help=True)
config_app = typer.Typer(name="config", help="Named configurations: model, approach, retrieval, prompt.",
                         no_args_is_help=True)
AsUser = Annotated[Optional[str], typer.Option("--as", help="The user who asks (items without their own asker).")]


def _print_set(data: dict, notes: list[str]) -> None:
    s = data["set"]
    readers = " and ".join("(" + ", ".join(a) + ")" for a in s["acl"]) or "nobody"
    console.print(styled("set ", (f"{s['name']}@{s['version']}", "bold"), f": {s['items']} questions, readable by {readers}"))
    for n in notes:
        console.print(styled((f"note: {n}", "dim")))


@set_app.command("import")
def import_set(name: str, file: Annotated[Path, typer.Argument(help="A .jsonl or .csv file.")],
               acl: Annotated[Optional[str], typer.Option(help="Who may read the set (default: who may read every document it names).")] = None,
               as_user: AsUser = None,
               description: Annotated[Optional[str], typer.Option(help="What the set is for.")] = None,
               as_json: JsonOpt = False) -> None:
    """Import questions (fields: question, answer, document, asker, kind) as the next version of NAME."""
    with friendly_errors():
        ws = open_ws()
        result = ws.evaluation.import_set(name, file, acl=acl, asker=as_user, description=description)
        cli_audit(ws, "eval.set.import", result.eval_set.ref, {"items": result.eval_set.items})
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_set(result.to_dict(), result.notes)


@set_app.command("generate")
def generate_set(name: str, source: Annotated[str, typer.Option("--source", help="The source to write questions from.")],
                 count: Annotated[int, typer.Option(min=1, max=10_000, help="Answerable questions.")] = 50,
                 as_user: AsUser = None,
                 unanswerable: Annotated[int, typer.Option(min=0, max=10_000, help="Questions the sources cannot answer.")] = 0,
                 forbidden: Annotated[int, typer.Option(min=0, max=10_000, help="Questions asked by users who may not read the answer.")] = 0,
                 seed: int = 0,
                 llm: Annotated[bool, typer.Option(help="Write questions with the configured LLM (else cloze questions).")] = True,
                 as_json: JsonOpt = False) -> None:
    """Generate questions from a source's text, each with its gold document and sentence."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with friendly_errors():
        ws = open_ws()
        with Progress(TextColumn("questions"), BarColumn(), MofNCompleteColumn(), console=err_console,
                      transient=True, disable=as_json) as bar:
            task = bar.add_task("q", total=None)
            result = ws.evaluation.generate_set(name, source, count, asker=as_user, unanswerable=unanswerable,
                                                forbidden=forbidden, seed=seed, use_llm=llm,
                                                progress=lambda i, n: bar.update(task, completed=i, total=n))
        cli_audit(ws, "eval.set.generate", result.eval_set.ref, {"items": result.eval_set.items, "source": source})
    if as_json:
        emit_json(result.to_dict())
    else:
        _print_set(result.to_dict(), result.notes)


@set_app.command("list")
def list_sets(all_versions: Annotated[bool, typer.Option("--all-versions", help="Every version, not only the latest.")] = False,
              as_json: JsonOpt = False) -> None:
    """Question sets (latest versions), with who may read them and whether they are pinned."""
    with friendly_errors():
        ws = open_ws()
        sets = ws.evaluation.sets.listing(all_versions=all_versions)
        pinned = {p["set"] for p in ws.evaluation.regression.pins()}
    if as_json:
        emit_json({"sets": [s.to_dict() | {"pinned": s.name in pinned} for s in sets]})
        return
    table = Table("set", "version", "questions", "origin", "readers", "pinned", "created")
    for s in sets:
        table.add_row(s.name, str(s.version), str(s.items), s.origin, " & ".join(",".join(a) for a in s.acl),
                      "yes" if s.name in pinned else "", (s.created_at or "")[:16])
    console.print(table)


@set_app.command("show")
def show_set(ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
             limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50, as_json: JsonOpt = False) -> None:
    """A set's questions with their expected answers and documents."""
    with friendly_errors():
        ws = open_ws()
        s = ws.evaluation.sets.get(ref)
        items = ws.evaluation.sets.items(s)[:limit]
    if as_json:
        emit_json({"set": s.to_dict(), "items": [i.to_dict() for i in items]})
        return
    table = Table("#", "kind", "question", "answer", "document", "asker")
    for n, i in enumerate(items, 1):
        table.add_row(str(n), i.kind, i.question[:80], " | ".join(i.answers)[:40], i.document or "", i.asker or "")
    console.print(table)


@set_app.command("remove")
def remove_set(name: str, as_json: JsonOpt = False) -> None:
    """Remove every version of a set (its runs keep their results)."""
    with friendly_errors():
        ws = open_ws()
        n = ws.evaluation.sets.delete(name)
        cli_audit(ws, "eval.set.remove", name, {"versions": n})
    if as_json:
        emit_json({"set": name, "versions_removed": n})
    else:
        console.print(styled(f"removed {n} version(s) of {name}"))


# -- configurations ----------------------------------------------------------------------------
@config_app.command("add")
def add_config(name: str,
               model: Annotated[Optional[str], typer.Option(help="A model from `bastion model list`.")] = None,
               approach: Annotated[Optional[str], typer.Option(help="extract | answer | prompt-only")] = None,
               search_mode: Annotated[Optional[str], typer.Option(help="hybrid | dense | bm25")] = None,
               k: Annotated[Optional[int], typer.Option(help="Passages retrieved.")] = None,
               max_passages: Annotated[Optional[int], typer.Option(help="Of those, passages the model reads.")] = None,
               prompt: Annotated[Optional[str], typer.Option(help="A prompt template folder.")] = None,
               min_evidence: Annotated[Optional[float], typer.Option(help="Evidence needed to answer.")] = None,
               adapter: Annotated[Optional[str], typer.Option(help="An adapter for the askers of its audience, or 'none' for the base model.")] = None,
               as_json: JsonOpt = False) -> None:
    """Store (or replace) a named configuration; unset settings take the workspace's."""
    from bastion.evaluation.configs import parse_spec

    with friendly_errors():
        ws = open_ws()
        fields = {"model": model, "approach": approach, "search_mode": search_mode, "k": k,
                  "max_passages": max_passages, "prompt": prompt, "min_evidence": min_evidence, "adapter": adapter}
        spec = parse_spec({k_: v for k_, v in fields.items() if v is not None})
        if spec.model:
            ws.models.get(spec.model)
        if spec.adapter and spec.adapter != "none":
            ws.adapters.get(spec.adapter)
        ws.evaluation.configs.put(name, spec)
        cli_audit(ws, "eval.config.add", name, spec.to_dict())
    if as_json:
        emit_json({"name": name, "spec": spec.to_dict()})
    else:
        console.print(styled("configuration ", (name, "bold"), " stored"))


@config_app.command("list")
def list_configs(as_json: JsonOpt = False) -> None:
    """Configurations, each resolved against the workspace's settings."""
    with friendly_errors():
        ws = open_ws()
        specs = {n: s.resolve(ws.config) for n, s in ws.evaluation.configs.all().items()}
    if as_json:
        emit_json({"configs": {n: s.to_dict() for n, s in specs.items()}})
        return
    table = Table("name", "model", "approach", "search", "k", "passages", "prompt", "min evidence")
    for n, s in specs.items():
        table.add_row(n, s.model or "", s.approach or "", s.search_mode or "", str(s.k), str(s.max_passages),
                      s.prompt or "", str(s.min_evidence))
    console.print(table)


@config_app.command("remove")
def remove_config(name: str) -> None:
    """Remove a stored configuration."""
    with friendly_errors():
        ws = open_ws()
        ws.evaluation.configs.remove(name)
        cli_audit(ws, "eval.config.remove", name, {})
    console.print(styled(f"removed configuration {name}"))


# -- feedback candidates -------------------------------------------------------------------------
def candidates(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50, as_json: JsonOpt = False) -> None:
    """Answers users rated, not yet accepted into a set or rejected."""
    with friendly_errors():
        found = open_ws().evaluation.candidates(limit)
    if as_json:
        emit_json({"candidates": found})
        return
    table = Table("id", "rating", "user", "question", "answer / correction", "documents")
    for c in found:
        table.add_row(str(c["feedback_id"]), c["rating"], c["user"], c["question"][:60],
                      (c["correction"] or c["answer"] or "")[:60], ", ".join(c["documents"])[:40])
    console.print(table)


def accept(ids: Annotated[str, typer.Argument(help="Feedback ids, comma-separated.")],
           set_name: Annotated[str, typer.Option("--set", help="The set to add them to (created if new).")],
           as_json: JsonOpt = False) -> None:
    """Accept rated answers as items of a set (a new version)."""
    with friendly_errors():
        ws = open_ws()
        wanted = _ids(ids)
        created = ws.evaluation.accept(wanted, set_name, by="cli")
        cli_audit(ws, "eval.candidates.accept", created.ref, {"feedback_ids": wanted})
    if as_json:
        emit_json({"set": created.to_dict()})
    else:
        console.print(styled(f"added {len(wanted)} item(s): ", (created.ref, "bold"), f" now holds {created.items}"))


def reject(ids: Annotated[str, typer.Argument(help="Feedback ids, comma-separated.")]) -> None:
    """Reject rated answers: they are no longer offered."""
    with friendly_errors():
        ws = open_ws()
        wanted = _ids(ids)
        ws.evaluation.reject(wanted, by="cli")
        cli_audit(ws, "eval.candidates.reject", None, {"feedback_ids": wanted})
    console.print(styled(f"rejected {len(wanted)} candidate(s)"))


def _ids(text: str) -> list[int]:
    from bastion.core.errors import ConfigError

    try:
        return [int(x) for x in csv_list(text)]
    except ValueError:
        raise ConfigError(f"{text!r}: give feedback ids as numbers, e.g. 3,5,8") from None
