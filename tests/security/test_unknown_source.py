"""Finding 13: "unknown source 'x' (known: ...)" listed every source to members, although the source
list is admin-only. Now the message names only the source asked for, to everyone."""
from __future__ import annotations

import pytest

from tests.conftest import write
from tests.server.conftest import auth


@pytest.fixture
def hidden_source(served, tmp_path):
    """A second source whose name a member has no business learning."""
    write(tmp_path / "mergers" / "plan.md", "# Project Falcon\n\nThe merger closes in Q1.\n")
    served.ws.sources.add_folder("mergers-falcon", tmp_path / "mergers", acl="group:board")
    return "mergers-falcon"


def _leaks(r, *names: str) -> list[str]:
    return [n for n in names if n in r.text]


def test_search_with_an_unknown_source_names_no_other_source(client, served, hidden_source):
    for who in ("bob", "root"):
        r = client.post("/api/v1/search", json={"query": "merger", "source": "nosuch"}, headers=auth(served.keys[who]))
        assert r.status_code == 400 and r.json()["detail"] == "unknown source 'nosuch'", (who, r.text)
        assert _leaks(r, hidden_source, "docs") == []
    # positive control: a member searching a real source gets its results
    r = client.post("/api/v1/search", json={"query": "hotel costs per night", "source": "docs"},
                    headers=auth(served.keys["bob"]))
    assert r.status_code == 200
    assert "hr/travel.md" in {h["path"] for h in r.json()["hits"]}
    assert {h["source"] for h in r.json()["hits"]} == {"docs"}


def test_other_paths_that_take_a_source_name_leak_none(client, served, hidden_source):
    listed = client.get("/api/v1/documents", params={"source": "nosuch"}, headers=auth(served.keys["bob"]))
    assert listed.status_code == 200 and listed.json()["documents"] == []
    upload = client.post("/api/v1/sources/nosuch/documents", files={"file": ("a.md", b"# A\n\ntext\n")},
                         headers=auth(served.keys["erin"]))
    assert 400 <= upload.status_code < 500 and _leaks(upload, hidden_source, "docs") == []
    # positive control: the admin's source list does name them
    names = {s["name"] for s in client.get("/api/v1/sources", headers=auth(served.keys["root"])).json()["sources"]}
    assert names == {"docs", hidden_source}


def test_the_python_api_and_cli_say_unknown_source_plainly(served, hidden_source):
    from bastion.core.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        served.ws.search("merger", served.ws.principal("bob"), source="nosuch")
    assert str(err.value) == "unknown source 'nosuch'"
    assert served.ws.search("hotel", served.ws.principal("bob"), source="docs")  # positive control
