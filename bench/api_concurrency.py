"""32 concurrent API clients searching, idle and while a sync writes: latency and errors.

The product path end to end: a real ``bastion serve`` process (uvicorn, FastAPI, API-key auth,
the audit write of every request, hybrid search with the ACL filter, the bundled e5 embedder),
and clients in this process over loopback HTTP. Each client is closed-loop (sends its next
search when the previous one answers: the saturation case), or, with ``--think``, like users who
wait a random (exponential) time between searches.

1. A workspace with the example corpus synced (the "docs" source) and a second folder source
   ("bulk") of SQuAD / CMRC paragraphs written as files, not yet synced.
2. Idle phase: C clients search for ``--seconds`` (questions from the datasets, users alternate
   between alice and bob, so both ACL paths run).
3. Sync phase: an admin starts ``POST /api/v1/sync {"source": "bulk"}``; the same clients search
   until the job completes. Reported: p50 / p95 / p99, throughput, errors, sync time.

    python bench/api_concurrency.py --clients 32 --paragraphs 400 --json bench/results/api-concurrency.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from _common import add_data_argument

ROOT = Path(__file__).resolve().parents[1]


def questions_and_paragraphs(data_dir: Path, n_paragraphs: int, seed: int):
    rng = random.Random(seed)
    paragraphs, questions = [], []
    for name in ("squad2-dev-half.json", "cmrc2018-dev.json"):
        data = json.loads((data_dir / name).read_text(encoding="utf-8"))["data"]
        for a in rng.sample(data, len(data)):
            for p in a["paragraphs"]:
                if len(paragraphs) >= n_paragraphs * (1 if name.startswith("squad") else 2):
                    break
                paragraphs.append((a["title"], p["context"]))
                questions += [q["question"] for q in p["qas"]]
    rng.shuffle(questions)
    return paragraphs, questions


def bastion(home: Path, *args: str, input: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-m", "bastion.cli.app", "--home", str(home), *args], input=input,
                         capture_output=True, text=True, check=True)
    return out.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    xs = sorted(values)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def load(base: str, keys: list[str], questions: list[str], clients: int, stop, think_s: float) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as http:
        async def client(i: int) -> None:
            n = i
            rng = random.Random(i)
            if think_s:  # users do not start in step: spread the first searches over one think time
                await asyncio.sleep(rng.uniform(0, think_s))
            while not stop():
                q = questions[n % len(questions)]
                n += clients
                t0 = time.perf_counter()
                try:
                    r = await http.post("/api/v1/search", json={"query": q[:4000], "k": 10},
                                        headers={"Authorization": f"Bearer {keys[i % len(keys)]}"})
                    if r.status_code != 200:
                        errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                    else:
                        latencies.append((time.perf_counter() - t0) * 1000)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                if think_s:  # exponential think times: arrivals like independent users, not a drumbeat
                    await asyncio.sleep(rng.expovariate(1 / think_s))

        start = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(clients)))
        seconds = time.perf_counter() - start
    return {"requests": len(latencies) + sum(errors.values()), "errors": errors, "seconds": round(seconds, 1),
            "throughput_rps": round(len(latencies) / seconds, 1), "p50_ms": round(pct(latencies, 50), 1),
            "p95_ms": round(pct(latencies, 95), 1), "p99_ms": round(pct(latencies, 99), 1),
            "max_ms": round(max(latencies, default=float("nan")), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--paragraphs", type=int, default=400, help="English paragraphs in the bulk source (and 2x Chinese)")
    ap.add_argument("--seconds", type=float, default=30, help="length of the idle phase")
    ap.add_argument("--think", type=float, default=0.0,
                    help="mean seconds each client waits between searches (exponential; 0: closed loop)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-sync", action="store_true", help="only the idle phase")
    add_data_argument(ap)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bastion-api-bench-"))
    home, bulk = work / "ws", work / "bulk"
    shutil.rmtree(work, ignore_errors=True)
    paragraphs, questions = questions_and_paragraphs(args.data, args.paragraphs, args.seed)
    for i, (title, text) in enumerate(paragraphs):
        path = bulk / f"{i // 100:03d}" / f"p{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{title}\n\n{text}\n", encoding="utf-8")

    print(f"workspace {home}: syncing the example corpus ...", flush=True)
    bastion(home.parent, "init", str(home))
    bastion(home, "user", "add", "root", "--groups", "it", "--role", "admin")
    bastion(home, "user", "add", "alice", "--groups", "finance,staff")
    bastion(home, "user", "add", "bob", "--groups", "staff")
    bastion(home, "source", "add", "docs", "--path", str(ROOT / "examples" / "corpus"), "--acl", "group:staff")
    bastion(home, "source", "add", "bulk", "--path", str(bulk), "--acl", "everyone")
    bastion(home, "sync", "docs")
    keys = {u: json.loads(bastion(home, "key", "create", "--user", u, "--json"))["key"] for u in ("root", "alice", "bob")}

    port = free_port()
    env = os.environ | {"BASTION_HOME": str(home)}
    server = subprocess.Popen([sys.executable, "-m", "bastion.cli.app", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit(f"server did not start: {server.stderr.read() if server.poll() is not None else ''}")
            time.sleep(0.3)
        users = [keys["alice"], keys["bob"]]
        # warm-up: load the embedder and open the index in the server
        httpx.post(f"{base}/api/v1/search", json={"query": "warm up"}, headers={"Authorization": f"Bearer {users[0]}"}, timeout=120)

        print(f"idle: {args.clients} clients for {args.seconds:.0f} s ...", flush=True)
        t_end = time.perf_counter() + args.seconds
        idle = asyncio.run(load(base, users, questions, args.clients, lambda: time.perf_counter() > t_end, args.think))
        print(f"  {idle}", flush=True)

        if args.no_sync:
            print(json.dumps({"clients": args.clients, "think_s": args.think, "idle": idle}))
            return
        admin = {"Authorization": f"Bearer {keys['root']}"}
        job = httpx.post(f"{base}/api/v1/sync", json={"source": "bulk"}, headers=admin, timeout=30).json()
        print(f"sync of {len(paragraphs)} files (job {job['id']}) with {args.clients} clients searching ...", flush=True)
        state = {"done": False, "job": job}

        async def watch():
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                while True:
                    await asyncio.sleep(1)
                    j = (await http.get(f"/api/v1/sync/jobs/{job['id']}", headers=admin)).json()
                    state["job"] = j
                    if j["status"] not in ("queued", "running"):
                        state["done"] = True
                        return

        async def both():
            t0 = time.perf_counter()
            watcher = asyncio.create_task(watch())
            result = await load(base, users, questions, args.clients, lambda: state["done"], args.think)
            await watcher
            return result, time.perf_counter() - t0

        during, sync_s = asyncio.run(both())
        print(f"  {during}", flush=True)
        report = state["job"]["report"] or {}
        out = {"clients": args.clients, "think_s": args.think, "bulk_files": len(paragraphs),
               "sync": {"status": state["job"]["status"], "seconds": round(sync_s, 1),
                        "chunks_embedded": report.get("chunks_embedded"), "documents_added": report.get("documents_added")},
               "idle": idle, "during_sync": during,
               "p95_ratio_sync_vs_idle": round(during["p95_ms"] / idle["p95_ms"], 2) if idle["p95_ms"] else None,
               "goal": {"p95_ms": 250, "errors": 0},
               "met": during["p95_ms"] <= 250 and not during["errors"] and not idle["errors"]}
        print(json.dumps(out, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
