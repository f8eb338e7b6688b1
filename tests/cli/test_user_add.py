"""``bastion user add`` refuses an existing user unless ``--replace`` (which says it replaces their
groups), reports groups it creates (with the closest existing name, for a typo), and ``bastion user
passwd`` says an unknown user is unknown before it looks at the password."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.core.errors import AccessError
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace


@pytest.fixture
def home(tmp_path, monkeypatch):
    h = tmp_path / "ws"
    Workspace.init(h)
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(h, embedder=HashEmbedder()))
    return h


def _run(home, *args: str, **kw):
    return CliRunner().invoke(cli.app, ["--home", str(home), *args], env={"COLUMNS": "300"}, **kw)


def _groups(home, user: str) -> set[str]:
    return set(Workspace.open(home, embedder=HashEmbedder()).principal(user).groups)


def test_an_existing_user_is_refused_unless_replace(home):
    assert _run(home, "user", "add", "dave", "--groups", "finance,staff").exit_code == 0
    r = _run(home, "user", "add", "dave", "--groups", "staff")
    assert r.exit_code == 2
    assert "user 'dave' already exists (groups: finance, staff)" in r.output and "--replace" in r.output
    assert _groups(home, "dave") == {"finance", "staff"}  # nothing changed
    r = _run(home, "user", "add", "dave", "--groups", "staff", "--replace")
    assert r.exit_code == 0 and "replaced the groups of dave: was finance, staff" in r.output
    assert _groups(home, "dave") == {"staff"}


def test_new_groups_are_reported_with_the_closest_existing_name(home):
    _run(home, "user", "add", "carol", "--groups", "finance,staff")
    r = _run(home, "user", "add", "erin", "--groups", "finanse")
    assert r.exit_code == 0 and "new group 'finanse' created (did you mean 'finance'?)" in r.output
    r = _run(home, "user", "add", "gus", "--groups", "staff,legal", "--json")
    data = json.loads(r.stdout)
    assert data["new_groups"] == ["legal"] and data["replaced_groups"] is None
    r = _run(home, "user", "add", "hana", "--groups", "staff")
    assert "new group" not in r.output


def test_passwd_of_an_unknown_user_says_unknown_user_first(home):
    r = _run(home, "user", "passwd", "nobodyhere", "--password-stdin", input="short\n")
    assert r.exit_code == 2 and "unknown user 'nobodyhere'" in r.output and "too short" not in r.output
    ws = Workspace.open(home, embedder=HashEmbedder())
    with pytest.raises(AccessError, match="unknown user 'nobodyhere'"):
        ws.accounts.set_password("nobodyhere", "x")
    ws.directory.add_user("ivy")
    with pytest.raises(AccessError, match="too short"):  # a known user: the password is checked
        ws.accounts.set_password("ivy", "x")
