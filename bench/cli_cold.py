"""Cold ``bastion search`` from the command line: a fresh process per search, wall and CPU seconds.

Builds a workspace of the example corpus (``examples/corpus``, users alice and bob) with the default
embedder, or reuses ``--home``, then runs each variant ``--runs`` times, round-robin so that a
change in the machine's load touches every variant alike:

- ``python -c pass`` and ``import bastion``: the interpreter's start and the package's own import;
- ``bastion --help``;
- ``search --local``: the search in the CLI's own process (imports, workspace, embedder, index);
- ``search, served``: the same command while a ``bastion serve`` of the workspace runs (the CLI
  bridge: the server searches, the CLI prints); the server's own CPU per search is read from /proc;
- ``search, previous`` (with ``--previous-src DIR``): the search as an earlier checkout's code runs
  it, e.g. ``git archive HEAD src | tar -x -C /tmp/prev`` then ``--previous-src /tmp/prev/src``;
  it gets its own copy of the workspace, built by that code.

CPU is the child's user + system time (``getrusage``). Then ``--breakdown`` fresh processes time
the local search's steps one by one (median): importing the CLI, opening the workspace, the user's
principal, loading the embedder, importing LanceDB, opening the index, the first query embedding,
the search, printing. Every variant's ``--json`` output is compared with the local one's.

    python bench/cli_cold.py --runs 10 --json bench/results/cli_cold.json
    python bench/cli_cold.py --home /tmp/ws --previous-src /tmp/prev/src
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUERY = "What was the Q3 2026 revenue?"
SEARCH = ["search", QUERY, "--as", "alice", "--k", "3"]

# one fresh process timing the steps of a local `bastion search` (as bastion.cli.index.search does them)
PHASES = r"""
import json, sys, time
marks = [("start", time.perf_counter(), time.process_time())]
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
home, query, user = sys.argv[1:4]
import bastion.cli.app
mark("import the CLI")
from bastion.cli.common import for_one_query
from bastion.workspace import Workspace
ws = Workspace.open(home)
for_one_query(ws)
ws.catalog
mark("open the workspace")
principal = ws.principal(user)
mark("principal (users, groups)")
ws.embedder
mark("load the embedder")
import lancedb
mark("import LanceDB")
ws.store
mark("open the index")
ws.embedder.embed_query(query)
mark("first query embedding")
hits = ws.search(query, principal, 3)
mark("search (embeds again)")
from bastion.cli.output import console
with open("/dev/null", "w") as sink:
    console.file = sink
    for h in hits:
        console.print(h.path, h.score, h.text[:240])
mark("print")
json.dump([(b[0], b[1] - a[1], b[2] - a[2]) for a, b in zip(marks, marks[1:])], sys.stdout)
"""


def bastion_cmd(python: str, *args: str) -> list[str]:
    return [python, "-m", "bastion.cli.app", *args]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU seconds of one fresh process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(home: Path, env: dict[str, str], python: str) -> None:
    steps = [["init", str(home)], ["user", "add", "alice", "--groups", "finance,staff"],
             ["user", "add", "bob", "--groups", "staff"],
             ["source", "add", "corpus", "--path", str(REPO / "examples" / "corpus"), "--acl", "everyone"],
             ["sync", "--json"]]
    for step in steps:
        subprocess.run(bastion_cmd(python, *step), env=env | {"BASTION_HOME": str(home)}, check=True,
                       capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, env: dict[str, str]) -> subprocess.Popen:
    from bastion.core import cli_bridge

    (home / "data" / cli_bridge.BRIDGE_FILE).unlink(missing_ok=True)
    server = subprocess.Popen(bastion_cmd(sys.executable, "serve", "--port", str(free_port())),
                              env=env | {"BASTION_HOME": str(home)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while cli_bridge.read_bridge(home / "data") is None:
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit("bastion serve did not start")
        time.sleep(0.2)
    return server


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": statistics.median(ordered), "p95": p95, "min": ordered[0], "max": ordered[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10, help="fresh processes per variant (default 10)")
    ap.add_argument("--breakdown", type=int, default=5, help="fresh processes timing the local search's steps")
    ap.add_argument("--home", type=Path, help="an existing workspace with users alice and bob (default: build one)")
    ap.add_argument("--previous-src", type=Path, help="the src/ folder of an earlier checkout, measured too")
    ap.add_argument("--no-server", action="store_true", help="skip the served variant")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()

    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "OMP_"))}
    tmp = Path(tempfile.mkdtemp(prefix="cli-cold-"))
    server = None
    try:
        t0 = time.perf_counter()
        previous_home = tmp / "previous-ws"
        if args.previous_src:  # built by that code: the current code may migrate the catalog past what it knows
            build(previous_home, env | {"PYTHONPATH": str(args.previous_src.resolve())}, sys.executable)
        home = args.home.resolve() if args.home else tmp / "ws"
        if not args.home:
            if args.previous_src:
                shutil.copytree(previous_home, home)
            else:
                build(home, env, sys.executable)
        print(f"workspace ready in {time.perf_counter() - t0:.0f} s: {home}", file=sys.stderr)
        ws_env = env | {"BASTION_HOME": str(home)}
        variants: dict[str, tuple[list[str], dict[str, str]]] = {
            "python -c pass": ([sys.executable, "-c", "pass"], env),
            "import bastion": ([sys.executable, "-c", "import bastion"], env),
            "bastion --help": (bastion_cmd(sys.executable, "--help"), ws_env),
            "search --local": (bastion_cmd(sys.executable, *SEARCH, "--local"), ws_env),
        }
        if args.previous_src:
            variants["search, previous"] = (bastion_cmd(sys.executable, *SEARCH),
                                            env | {"BASTION_HOME": str(previous_home),
                                                   "PYTHONPATH": str(args.previous_src.resolve())})
        if not args.no_server:
            server = start_server(home, env)
            variants["search, served"] = (bastion_cmd(sys.executable, *SEARCH), ws_env)
            run(variants["search, served"][0], ws_env)  # the server's first search loads what it loads lazily

        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpus: dict[str, list[float]] = {name: [] for name in variants}
        server_cpu: list[float] = []
        load_before = os.getloadavg()
        for _ in range(args.runs):
            for name, (cmd, venv) in variants.items():
                before = proc_cpu(server.pid) if server is not None and name == "search, served" else None
                wall, cpu, _ = run(cmd, venv)
                if before is not None and server is not None:
                    server_cpu.append(proc_cpu(server.pid) - before)
                walls[name].append(wall)
                cpus[name].append(cpu)
        load_after = os.getloadavg()

        # the same output whichever way the search ran
        outputs = {name: run([*cmd, "--json"], venv)[2] for name, (cmd, venv) in variants.items()
                   if name.startswith("search")}
        reference = outputs["search --local"]
        same = {name: out == reference for name, out in outputs.items()}

        steps: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.breakdown):
            _, _, out = run([sys.executable, "-c", PHASES, str(home), QUERY, "alice"], ws_env)
            for name, wall, cpu in json.loads(out):
                steps.setdefault(name, []).append((wall, cpu))
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
        shutil.rmtree(tmp, ignore_errors=True)

    result = {
        "runs": args.runs, "query": QUERY, "load_average_before": load_before, "load_average_after": load_after,
        "variants": {name: {"wall_s": summary(walls[name]), "cpu_s": summary(cpus[name])} for name in variants},
        "served_server_cpu_s": summary(server_cpu) if server_cpu else None,
        "same_output_as_local": same,
        "breakdown": {name: {"wall_s": statistics.median(w for w, _ in v), "cpu_s": statistics.median(c for _, c in v)}
                      for name, v in steps.items()},
    }
    print(f"cold CLI search, {args.runs} fresh processes per variant "
          f"(load average {load_before[0]:.2f} before, {load_after[0]:.2f} after)")
    print(f"{'variant':<20}{'wall p50':>10}{'wall p95':>10}{'cpu p50':>10}{'cpu p95':>10}")
    for name, v in result["variants"].items():
        print(f"{name:<20}{v['wall_s']['median']:>10.3f}{v['wall_s']['p95']:>10.3f}"
              f"{v['cpu_s']['median']:>10.3f}{v['cpu_s']['p95']:>10.3f}")
    if server_cpu:
        print(f"server CPU per served search: median {statistics.median(server_cpu):.3f} s")
    print("same --json output as the local search: " + ", ".join(f"{k}: {v}" for k, v in same.items()))
    print(f"\nlocal search, step by step (median of {args.breakdown} fresh processes; interpreter start not included)")
    for name, v in result["breakdown"].items():
        print(f"  {name:<28}{v['wall_s']:>8.3f} s wall{v['cpu_s']:>8.3f} s cpu")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
