"""``bastion ask`` and ``bastion chat``: answers with citations, as a user."""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.empty import print_hint
from bastion.cli.output import console, emit_json, err_console, friendly_errors, json_line, plain, styled
from bastion.core.errors import ConfigError

if TYPE_CHECKING:
    from bastion.generation.results import Answer

app = typer.Typer()


def _print_answer(a: Answer, as_json: bool) -> None:
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


def _streamer(enabled: bool) -> Callable[[str], None] | None:
    """Show the model's draft as it streams (stderr, dim); the checked answer follows on stdout."""
    if not enabled:
        return None

    started: list[bool] = []

    def on_token(text: str) -> None:
        if not started:
            started.append(True)
            err_console.print(styled(("draft (not yet checked): ", "dim italic")), end="")
        err_console.print(plain(text, "dim", multiline=True), end="")

    return on_token


@app.command()
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
        ws = open_ws()
        on_token = _streamer(stream and not as_json and sys.stderr.isatty())
        a = ws.ask(question, ws.principal(as_user), mode=mode, source=source, on_token=on_token)
        if on_token:
            err_console.print()
        hint = ws.index_status(source).hint if a.decision == "abstained" else None
    _print_answer(a, as_json)
    if hint:
        print_hint(hint)


@app.command()
def chat(as_user: Annotated[str, typer.Option("--as", help="Chat as this user (required).")],
         mode: Annotated[Optional[str], typer.Option(help="answer | extract")] = None,
         as_json: JsonOpt = False) -> None:
    """Multi-turn questions; follow-ups are rewritten into standalone questions before retrieval.

    Reads one question per line from standard input; an empty line or end of input stops.
    """
    from bastion.generation.protocol import ChatMessage

    with friendly_errors():
        ws = open_ws()
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
