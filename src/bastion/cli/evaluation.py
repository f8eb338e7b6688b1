"""``bastion eval …``: run question sets under configurations, compare, report, promote, and pin
regression sets (question sets and configurations are in :mod:`bastion.cli.eval_sets`)."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from bastion.cli import eval_sets
from bastion.cli.common import JsonOpt, cli_audit, csv_list, open_ws
from bastion.cli.output import Table, console, emit_json, err_console, friendly_errors, styled

app = typer.Typer(name="eval", help="Evaluate models and approaches on your own questions; catch regressions.",
                  no_args_is_help=True)
app.add_typer(eval_sets.set_app)
app.add_typer(eval_sets.config_app)
app.command("candidates")(eval_sets.candidates)
app.command("accept")(eval_sets.accept)
app.command("reject")(eval_sets.reject)

COLUMNS = (("items", "items"), ("contains", "contains (95% CI)"), ("f1", "F1 (95% CI)"), ("similarity", "similarity"),
           ("groundedness", "groundedness"), ("citation_accuracy", "cites the gold document"),
           ("abstention_recall_unanswerable", "abstains when unanswerable"),
           ("abstention_recall_forbidden", "abstains when forbidden"), ("abstention_precision", "abstention precision"),
           ("consistency", "consistency"), ("leaks", "leaks"), ("latency_p50_ms", "latency p50 ms"),
           ("latency_p95_ms", "latency p95 ms"), ("ttft_p95_ms", "first token p95 ms"), ("tokens_per_s", "tokens/s"),
           ("peak_rss_mb", "peak memory MB"), ("cpu_s_per_1000", "CPU-s per 1,000 questions"))


def _cell(metrics: dict[str, Any], key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    ci = (metrics.get("ci") or {}).get(key)
    if isinstance(value, float) and not key.endswith(("_ms", "_mb", "_1000", "_per_s")):
        return f"{value:.2f}" + (f" ({ci[0]:.2f}–{ci[1]:.2f})" if ci and key in ("contains", "f1") else "")
    return f"{value:.0f}" if isinstance(value, float) else str(value)


def print_metrics(run: dict[str, Any]) -> None:
    s = run["set"]
    console.print(styled("run ", (run["run_id"], "bold"), f" of {s['name']}@{s['version']} ({run['status']})"))
    table = Table("metric", *(c["name"] for c in run["configs"]))  # a column per configuration: fits narrow terminals
    for key, label in COLUMNS:
        table.add_row(label, *(_cell(c["metrics"], key) for c in run["configs"]))
    console.print(table)
    for c in run["configs"]:
        if c["metrics"].get("leaks"):
            console.print(styled((f"LEAK: {c['name']} answered {c['metrics']['leaks']} forbidden question(s) from text the "
                                  "asker may not read", "bold red")))
        if c["metrics"].get("errors"):
            console.print(styled((f"{c['name']}: {c['metrics']['errors']} item(s) could not be asked", "yellow")))
    if run.get("comparison"):
        print_comparison(run["comparison"]["metrics"], run["comparison"]["baseline"], run["comparison"]["against"])


def print_comparison(metrics: dict[str, Any], a: str, b: str) -> None:
    table = Table("metric", a, b, "difference (95% CI)", "p", "verdict")
    for name, r in metrics.items():
        if r is None:
            table.add_row(name, "–", "–", "no shared items", "", "")
            continue
        verdict = ("not distinguishable" if not r["significant"] else
                   f"{b} {'better' if (r['diff'] > 0) == (name not in ('false_abstention',)) else 'worse'}")
        table.add_row(name, f"{r['a']:.3f}", f"{r['b']:.3f}", f"{r['diff']:+.3f} ({r['ci'][0]:+.3f}…{r['ci'][1]:+.3f})",
                      f"{r['p_value']:.3f}", verdict)
    console.print(table)


@contextmanager
def run_progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A bar per configuration on stderr while questions are asked."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def update(config: str, done: int, total: int) -> None:
            if config not in tasks:
                tasks[config] = bar.add_task(config, total=total)
            bar.update(tasks[config], completed=done)

        yield update


@app.command("run")
def run(set_ref: Annotated[str, typer.Argument(help="NAME or NAME@VERSION.")],
        config: Annotated[Optional[list[str]], typer.Option("--config", help="A configuration (repeat for several; default: current).")] = None,
        mode: Annotated[Optional[str], typer.Option(help="extract | answer | prompt-only, for every configuration.")] = None,
        as_user: Annotated[Optional[str], typer.Option("--as", help="Ask as this user where an item names none.")] = None,
        repeat: Annotated[int, typer.Option(min=0, max=100_000, help="Items asked twice, for consistency.")] = 10,
        limit: Annotated[Optional[int], typer.Option(min=1, help="Only the first N items.")] = None,
        judge_url: Annotated[Optional[str], typer.Option(help="An OpenAI-compatible URL for an LLM judge (off by default).")] = None,
        judge_model: Annotated[Optional[str], typer.Option(help="The judge's model name on that server.")] = None,
        judge_key_env: Annotated[Optional[str], typer.Option(help="Environment variable holding the judge's API key.")] = None,
        as_json: JsonOpt = False) -> None:
    """Ask every question of a set under each configuration and measure quality, leaks and cost."""
    from bastion.core.errors import ConfigError

    judge = None
    with friendly_errors():
        if judge_url:
            from bastion.evaluation.judge import Judge

            if not judge_model:
                raise ConfigError("--judge-url needs --judge-model (the model's name on that server)")
            judge = Judge(judge_url, judge_model, api_key_env=judge_key_env)
        ws = open_ws()
        with run_progress(not as_json and err_console.is_terminal) as progress:
            result = ws.evaluation.run(set_ref, config or [], mode=mode, asker=as_user, repeat=repeat, limit=limit,
                                       judge=judge, progress=progress, trigger="cli", started_by="cli")
        cli_audit(ws, "eval.run", result["run_id"], {"set": set_ref, "configs": [c["name"] for c in result["configs"]]})
    if as_json:
        emit_json(result)
    else:
        print_metrics(result)
        console.print(styled((f"report: bastion eval report {result['run_id']} -o report.html", "dim")))


@app.command("runs")
def runs(set_name: Annotated[Optional[str], typer.Option("--set", help="Only runs of this set.")] = None,
         limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20, as_json: JsonOpt = False) -> None:
    """Evaluation runs, newest first."""
    with friendly_errors():
        ev = open_ws().evaluation
        ids = [s.id for s in ev.sets.listing(all_versions=True) if s.name == set_name] if set_name else None
        found = ev.runs.recent(set_ids=ids, limit=limit)
    if as_json:
        emit_json({"runs": found})
        return
    table = Table("run", "set", "when", "trigger", "status", "configuration", "contains", "F1", "leaks", "p95 ms")
    for r in found:
        for c in r["configs"] or [{"name": "–", "metrics": {}}]:
            m = c["metrics"]
            table.add_row(r["run_id"][:12], f"{r['set']['name']}@{r['set']['version']}", (r["started_at"] or "")[:16],
                          r["trigger"], r["status"], c["name"], _cell(m, "contains"), _cell(m, "f1"), _cell(m, "leaks"),
                          _cell(m, "latency_p95_ms"))
    console.print(table)


def _full_id(ev: Any, run_id: str) -> str:
    """A run id, or a unique prefix of one (as `bastion eval runs` shows them)."""
    if len(run_id) == 32:
        return run_id
    matches = [r["run_id"] for r in ev.runs.recent(limit=10_000) if r["run_id"].startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    from bastion.core.errors import ConfigError

    raise ConfigError(f"run {run_id!r} {'matches several runs' if matches else 'is unknown'}; give more of its id")


@app.command("show")
def show(run_id: str, as_json: JsonOpt = False) -> None:
    """One run's metrics (``--json``: with every item's answer and scores)."""
    with friendly_errors():
        ev = open_ws().evaluation
        result = ev.runs.get(_full_id(ev, run_id), items=as_json)
    if as_json:
        emit_json(result)
    else:
        print_metrics(result)


@app.command("report")
def report(run_ids: Annotated[list[str], typer.Argument(help="One or more runs.")],
           out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the HTML page.")] = Path("eval-report.html"),
           as_json: JsonOpt = False) -> None:
    """Write a self-contained HTML report: metrics with intervals, plots, the worst items with their passages."""
    with friendly_errors():
        ev = open_ws().evaluation
        html = ev.report([_full_id(ev, r) for r in run_ids])
    out.write_text(html, encoding="utf-8")
    if as_json:
        emit_json({"path": str(out.resolve()), "bytes": len(html.encode())})
    else:
        console.print(styled(f"wrote {out.resolve()}"))


@app.command("compare")
def compare(run_a: str, run_b: str,
            config_a: Annotated[Optional[str], typer.Option(help="Configuration of the first run (default: its first).")] = None,
            config_b: Annotated[Optional[str], typer.Option(help="Configuration of the second run (default: its first).")] = None,
            as_json: JsonOpt = False) -> None:
    """Two runs on their shared items: each metric's difference, its interval and a paired test."""
    with friendly_errors():
        ev = open_ws().evaluation
        result = ev.compare(_full_id(ev, run_a), _full_id(ev, run_b), config_a=config_a, config_b=config_b)
    if as_json:
        emit_json(result)
        return
    if not result["same_set"]:
        console.print(styled(("note: the runs are of different set versions; only shared items are compared", "yellow")))
    print_comparison(result["metrics"], f"{result['a']['config']} ({run_a[:8]})", f"{result['b']['config']} ({run_b[:8]})")


@app.command("promote")
def promote(config: str, set_ref: Annotated[str, typer.Option("--set", help="The set to decide on.")],
            tolerance: Annotated[float, typer.Option(min=0, max=1, help="How much worse a pinned metric may be.")] = 0.02,
            metric: Annotated[Optional[str], typer.Option(help="Pinned metrics, comma-separated (default: quality and abstention).")] = None,
            force: Annotated[bool, typer.Option(help="Promote even if worse (audited).")] = False,
            as_json: JsonOpt = False) -> None:
    """Make CONFIG the workspace's default if, on a fresh run of the set, it is not worse than current."""
    from bastion.evaluation.regression import PINNED_DEFAULT

    with friendly_errors():
        ws = open_ws()
        with run_progress(not as_json and err_console.is_terminal) as progress:
            decision = ws.evaluation.regression.promote(config, set_ref, tolerance=tolerance,
                                                        metrics=csv_list(metric) or PINNED_DEFAULT, force=force,
                                                        by="cli", progress=progress)
        cli_audit(ws, "eval.promote", config, {k: decision[k] for k in ("run_id", "forced", "regressions", "tolerance")}
                  | {"changed": decision.get("changed")}, outcome="ok" if decision["promoted"] else "denied")
    if as_json:
        emit_json(decision)
    else:
        _print_promotion(decision)
    if not decision["promoted"]:
        raise typer.Exit(1)


def _print_promotion(d: dict[str, Any]) -> None:
    for r in d["regressions"]:
        console.print(styled((f"  {r['metric']}: {r['baseline']} → {r['now']} ({r['change']:+})", "yellow")))
    if d["promoted"]:
        what = ", ".join(f"{k} = {v[1]}" for k, v in (d.get("changed") or {}).items()) or "nothing to change"
        console.print(styled(((f"promoted {d['config']}" + (" (forced)" if d["forced"] else "")), "bold green"), f": {what}"))
    else:
        console.print(styled((f"not promoted: {d['config']} is worse than current beyond tolerance {d['tolerance']} "
                              "(see above); use --force to promote anyway (audited)", "bold red")))
    console.print(styled((f"report: bastion eval report {d['run_id']} -o report.html", "dim")))


@app.command("pin")
def pin(set_name: str,
        config: Annotated[str, typer.Option(help="The configuration to run it with.")] = "current",
        metric: Annotated[Optional[str], typer.Option(help="Pinned metrics, comma-separated.")] = None,
        tolerance: Annotated[float, typer.Option(min=0, max=1, help="A drop larger than this opens an alert.")] = 0.05,
        every: Annotated[Optional[str], typer.Option(help="Also run on this schedule, e.g. 1d (checked by `bastion monitor run`).")] = None,
        sync_change: Annotated[float, typer.Option(min=0.001, max=1, help="Run after a sync that changed this share of a source.")] = 0.2,
        baseline: Annotated[Optional[str], typer.Option(help="A run to compare against (default: the first run).")] = None,
        as_json: JsonOpt = False) -> None:
    """Pin a set as a regression set: re-run after changes and on a schedule; drops open alerts."""
    from bastion.evaluation.regression import PINNED_DEFAULT

    with friendly_errors():
        ws = open_ws()
        p = ws.evaluation.regression.pin(set_name, config=config, metrics=csv_list(metric) or PINNED_DEFAULT,
                                         tolerance=tolerance, every=every, sync_change=sync_change,
                                         baseline_run_id=baseline, by="cli")
        cli_audit(ws, "eval.pin", set_name, p)
    if as_json:
        emit_json(p)
    else:
        console.print(styled("pinned ", (set_name, "bold"), f": {', '.join(p['metrics'])} within {p['tolerance']}; "
                             "it runs with `bastion monitor run` when due"))


@app.command("unpin")
def unpin(set_name: str) -> None:
    """Stop running a set as a regression set."""
    with friendly_errors():
        ws = open_ws()
        ws.evaluation.regression.unpin(set_name)
        cli_audit(ws, "eval.unpin", set_name, {})
    console.print(styled(f"unpinned {set_name}"))


@app.command("pins")
def pins(as_json: JsonOpt = False) -> None:
    """Pinned regression sets, and whether each is due now."""
    with friendly_errors():
        reg = open_ws().evaluation.regression
        found = [p | {"due": reg.why_due(p)} for p in reg.pins()]
    if as_json:
        emit_json({"pins": found})
        return
    table = Table("set", "config", "metrics", "tolerance", "every", "baseline", "last run", "due")
    for p in found:
        table.add_row(p["set"], p["config"], ", ".join(p["metrics"]), str(p["tolerance"]), p["every"] or "",
                      (p["baseline_run_id"] or "")[:12], (p["last_run_at"] or "never")[:16], p["due"] or "")
    console.print(table)


def print_regression_results(results: list[dict[str, Any]]) -> None:
    """What ``bastion monitor run`` prints for the pinned sets it ran."""
    for r in results:
        status = ("bold red", "dropped") if r["regressions"] else ("green", "within tolerance")
        console.print(styled(f"pinned set {r['set']} ({r['trigger']}): ", (status[1], status[0]), f" · run {r['run_id'][:12]}"))
