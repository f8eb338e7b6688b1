"""``bastion lineage …``: the trace every answer leaves, upstream and downstream."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from bastion.cli.common import JsonOpt, open_ws
from bastion.cli.output import Table, console, emit_json, friendly_errors, styled

app = typer.Typer(name="lineage", help="The trace every answer leaves.", no_args_is_help=True)


@app.command("show")
def lineage_show(lineage_id: str, as_json: JsonOpt = False) -> None:
    """Print one answer's lineage record."""
    with friendly_errors():
        rec = open_ws().lineage(lineage_id)
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


@app.command("trace")
def lineage_trace(lineage_id: str, as_json: JsonOpt = False) -> None:
    """Walk one answer upstream: each chunk's document version, ingest run, source and embedder."""
    from bastion.lineage import trace_answer

    with friendly_errors():
        ws = open_ws()
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


@app.command("document")
def lineage_document(ref: Annotated[str, typer.Argument(help="A document id or SOURCE:KEY, e.g. docs:hr/leave.md.")],
                     as_json: JsonOpt = False) -> None:
    """Walk a document downstream: its versions, the runs that indexed them, and the answers that used each."""
    from bastion.lineage import trace_document

    with friendly_errors():
        t = trace_document(open_ws().catalog, ref)
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


@app.command("version")
def lineage_version(version_id: str, as_json: JsonOpt = False) -> None:
    """Which answers used this document version?"""
    from bastion.lineage import trace_version

    with friendly_errors():
        t = trace_version(open_ws().catalog, version_id)
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


@app.command("list")
def lineage_list(limit: Annotated[int, typer.Option(min=1, max=10000)] = 20,
                 user: Annotated[Optional[str], typer.Option(help="Only this user's answers.")] = None,
                 as_json: JsonOpt = False) -> None:
    """The most recent answers."""
    with friendly_errors():
        rows = open_ws().lineage_list(limit, user)
    if as_json:
        emit_json(rows)
        return
    table = Table("id", "time", "user", "decision", "question")
    for r in rows:
        table.add_row(r["id"], r["created_at"][:19], r["user_id"], r["decision"], r["question"][:60])
    console.print(table)
