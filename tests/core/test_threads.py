"""``bastion serve`` runs numpy's matrix products on server.query_threads threads."""
from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import bastion.server
from threadpoolctl import threadpool_info
seen = {}
bastion.server.serve = lambda ws, host, port: seen.update(blas=[i["num_threads"] for i in threadpool_info()
                                                               if i["user_api"] == "blas"])
from bastion.cli.app import app
try:
    app(["--home", sys.argv[1], "serve"])
except SystemExit:
    pass
print(json.dumps(seen))
"""


def test_serve_limits_blas_to_the_query_threads(tmp_path):
    """Numpy's BLAS would use every core for one query's exact ranking; the server gives it one thread
    per query (server.query_threads) as it does the query's embedding. Positive control: a plain Python
    process keeps the library's default (both cores here)."""
    home = tmp_path / "ws"
    subprocess.run([sys.executable, "-m", "bastion.cli.app", "init", str(home)], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-c", PROBE, str(home)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["blas"] == [1]
    default = subprocess.run([sys.executable, "-c", "import numpy, threadpoolctl, json; print(json.dumps("
                              "[i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas']))"],
                             capture_output=True, text=True, timeout=60)
    if (os.cpu_count() or 1) > 1:
        assert json.loads(default.stdout)[0] > 1
