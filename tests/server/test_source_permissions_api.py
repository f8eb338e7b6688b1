"""Admins choose over the API where a folder's ACLs come from (files, the file system, or both)."""
from tests.server.conftest import auth


def test_admins_set_where_a_folders_acls_come_from_and_bad_values_are_named(client, served, tmp_path):
    root = auth(served.keys["root"])
    (tmp_path / "share").mkdir()
    r = client.post("/api/v1/sources", headers=root,
                    json={"name": "share", "kind": "folder", "path": str(tmp_path / "share"), "permissions": "posix",
                          "posix_other": "everyone"})
    assert r.status_code == 201, r.text
    assert (r.json()["config"]["permissions"], r.json()["config"]["posix_other"]) == ("posix", "everyone")
    r = client.patch("/api/v1/sources/share", headers=root, json={"permissions": "both", "sync": False})
    assert r.status_code == 200 and r.json()["config"]["permissions"] == "both"
    bad = client.patch("/api/v1/sources/share", headers=root, json={"permissions": "unix"})
    assert bad.status_code == 422 and "permissions" in bad.text
    assert served.ws.sources.get("share").config["permissions"] == "both"  # nothing changed by the refusal
    member = client.patch("/api/v1/sources/share", headers=auth(served.keys["bob"]), json={"permissions": "posix"})
    assert member.status_code == 403
