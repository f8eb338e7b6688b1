"""Run-to-run spread of bench/search_scale.py: several ``--json`` files of the same store, one table.

This machine is noisy (the same cell has measured ±30 % between runs), so a goal is judged on
repeated runs, not one. For each size and ACL cell the table gives the lowest and highest p95 over
the runs of each mode, recall@10's lowest mean, and how many runs met each goal (dense p95 ≤ 20 ms
for the store's and the retriever's dense search, hybrid p95 ≤ 40 ms, recall@10 ≥ 0.95).

    python bench/scale_spread.py bench/results/scale-1m-v12-quiet-*.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

DENSE_MS, HYBRID_MS, RECALL = 20.0, 40.0, 0.95


def spread(paths: list[Path]) -> str:
    cells: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for path in paths:
        for result in json.loads(path.read_text())["results"]:
            for cell in result["cells"]:
                cells[(result["size"], cell["acl"])].append(cell)
    lines = [f"{len(paths)} runs: " + ", ".join(p.name for p in paths), "",
             "| chunks | ACL | dense p95 ms | dense (retriever) p95 ms | bm25 p95 ms | hybrid p95 ms | recall@10 (lowest) "
             "| runs meeting dense / hybrid / recall |",
             "|---:|---|---:|---:|---:|---:|---:|---|"]
    for (size, acl), runs in cells.items():
        def rng(key: str) -> str:
            xs = [c[key] for c in runs]
            return f"{min(xs):.1f}–{max(xs):.1f}"
        dense_ok = sum(c["dense_p95"] <= DENSE_MS and c["dense_r_p95"] <= DENSE_MS for c in runs)
        hybrid_ok = sum(c["hybrid_p95"] <= HYBRID_MS for c in runs)
        recall_ok = sum(c["recall"] >= RECALL for c in runs)
        n = len(runs)
        lines.append(f"| {size:,} | {acl} | {rng('dense_p95')} | {rng('dense_r_p95')} | {rng('bm25_p95')} | {rng('hybrid_p95')} "
                     f"| {min(c['recall'] for c in runs):.3f} | {dense_ok}/{n} · {hybrid_ok}/{n} · {recall_ok}/{n} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="search_scale.py --json files")
    print(spread(ap.parse_args().json))


if __name__ == "__main__":
    main()
