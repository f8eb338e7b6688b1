"""The server keeps the search indexes in memory: loaded at start, loaded again after a sync changed them."""
from __future__ import annotations

import re
import time

from fastapi.testclient import TestClient

from bastion.server import create_app
from tests.conftest import write
from tests.server.conftest import auth

LOADS = re.compile(r'bastion_index_warm_loads_total\{index="([^"]+)"\} (\S+)')


def _loads(client, key) -> dict[str, float]:
    return {name: float(n) for name, n in LOADS.findall(client.get("/metrics", headers=auth(key)).text)}


def _until(fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def test_indexes_are_loaded_at_start_and_again_after_a_sync_changed_them(served, tmp_path):
    served.ws.config.search.warm_check_s = 0.2
    root, bob = served.keys["root"], served.keys["bob"]
    with TestClient(create_app(served.ws)) as client:
        first = _until(lambda: _loads(client, root))
        assert {"terms_idx", "acl_idx"} <= set(first)  # the full-text and the ACL index the searches use
        time.sleep(1.0)
        assert _loads(client, root) == first  # nothing changed: nothing loaded again

        write(tmp_path / "docs" / "hr" / "canteen.md", "# Canteen\n\nThe canteen closes at 15:00 on Fridays.\n")
        served.ws.sync()  # its optimize gives the full-text index a new segment: new files
        _until(lambda: _loads(client, root).get("terms_idx", 0) > first["terms_idx"])  # loaded again, in the background
        hits = client.post("/api/v1/search", json={"query": "canteen Fridays"}, headers=auth(bob)).json()["hits"]
        assert hits and hits[0]["path"].endswith("canteen.md")


def test_no_loading_when_switched_off(served):
    served.ws.config.search.warm_check_s = 0
    with TestClient(create_app(served.ws)) as client:
        hits = client.post("/api/v1/search", json={"query": "hotel"}, headers=auth(served.keys["bob"])).json()["hits"]
        assert hits  # searches work, the indexes load on the request path as before
        time.sleep(0.5)
        assert _loads(client, served.keys["root"]) == {}
