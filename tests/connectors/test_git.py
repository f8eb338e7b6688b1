"""The git connector against real repositories: a bare repository made by the test, changed through
a work clone (commits, deletions, a branch switch, a force-push), synced into a real workspace."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from bastion.core.errors import ConfigError, IngestError
from bastion.testing import ConnectorContract
from bastion.testing.connector_contract import _CountingConnector
from tests.conftest import EXAMPLES

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", "-c", "init.defaultBranch=main",
       "-c", "protocol.file.allow=always"]


class Remote:
    """A bare repository and a work clone that commits and pushes to it."""

    def __init__(self, root):
        self.bare, self.work = root / "remote.git", root / "work"
        self.git("init", "--quiet", "--bare", "-b", "main", str(self.bare))
        self.git("clone", "--quiet", str(self.bare), str(self.work))
        self.url = f"file://{self.bare}"
        self.commits = 0

    def git(self, *args, cwd=None) -> str:
        return subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    def write(self, rel: str, data: str | bytes) -> None:
        path = self.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())

    def commit(self, message: str = "change", *, branch: str = "main", force: bool = False) -> str:
        self.commits += 1
        self.git("add", "-A", cwd=self.work)
        self.git("commit", "--quiet", "--allow-empty", "-m", f"{message} {self.commits}", cwd=self.work)
        self.git("push", "--quiet", *(["--force"] if force else []), "origin", f"HEAD:{branch}", cwd=self.work)
        return self.git("rev-parse", "HEAD", cwd=self.work)


@pytest.fixture
def remote(tmp_path):
    return Remote(tmp_path)


def _sync(ws):
    [report] = ws.sync("repo")
    assert report.status == "completed", report.to_dict()
    return report


def _seen(ws, words, user="bob") -> bool:
    return any(words in h.text for h in ws.search(words, ws.principal(user), 10))


def _paths(ws, words, user="bob") -> set[str]:
    return {h.path for h in ws.search(words, ws.principal(user), 10) if words in h.text}


# -- the contract ------------------------------------------------------------------------------
class TestGitContract(ConnectorContract):
    per_document_acl = False  # a git source has one ACL for the whole repository

    @pytest.fixture
    def backend(self, tmp_path):
        return Remote(tmp_path / "backend")

    def add_source(self, ws, name, backend, acl):
        ws.sources.add_kind(name, "git", {"url": backend.url}, acl=acl)

    def put_document(self, backend, name, text, *, acl=None):
        backend.write(f"docs/{name}.md", text)
        backend.commit(f"write {name}")

    def delete_document(self, backend, name):
        (backend.work / "docs" / f"{name}.md").unlink()
        backend.commit(f"delete {name}")

    def break_document(self, backend, name):
        backend.write(f"docs/{name}.pdf", b"%PDF-1.7\nnot a PDF body\n")
        backend.commit(f"break {name}")

    def make_unreachable(self, backend):
        shutil.move(backend.bare, backend.bare.with_name("moved.git"))


# -- history -----------------------------------------------------------------------------------
def test_files_follow_commits_and_unchanged_files_are_not_read(ws, remote, monkeypatch):
    remote.write("README.md", "# Handbook\nThe canteen opens at 11:30 canteenopen.")
    remote.write("guide.rst", "Guide\n=====\n\nParking permits are renewed in March parkingmarch.")
    remote.write("docs/q3.pdf", (EXAMPLES / "finance" / "q3_2026_results_summary.pdf").read_bytes())
    remote.write("src/app.py", "print('source code is not documentation codeonly')\n")
    first_commit = remote.commit("initial")
    ws.sources.add_kind("repo", "git", {"url": remote.url}, acl="everyone")
    assert _sync(ws).documents_added == 3
    assert _paths(ws, "canteenopen") == {"README.md"} and _seen(ws, "parkingmarch") and _seen(ws, "EUR 48.2 million")
    assert not _seen(ws, "codeonly", "alice")
    items = {i.key: i for i in ws.sources.connector(ws.sources.get("repo")).scan()}
    assert {i.metadata["commit"] for i in items.values()} == {first_commit}
    assert items["README.md"].metadata["blob"] == remote.git("rev-parse", "HEAD:README.md", cwd=remote.work)

    remote.write("README.md", "# Handbook\nThe canteen opens at 11:00 canteenearly.")
    (remote.work / "guide.rst").unlink()
    remote.write("docs/travel.md", "# Travel\nThe hotel cap is EUR 180 hotelcap.")
    remote.commit("second")
    loads: list[str] = []
    build = ws.sources.connector
    monkeypatch.setattr(ws.sources, "connector", lambda row: _CountingConnector(build(row), loads))
    report = _sync(ws)
    assert (report.documents_added, report.documents_updated, report.documents_deleted,
            report.documents_unchanged) == (1, 1, 1, 1)
    assert sorted(loads) == ["README.md", "docs/travel.md"]  # the PDF's blob did not change: not read
    assert _seen(ws, "canteenearly") and not _seen(ws, "canteenopen", "alice") and not _seen(ws, "parkingmarch", "alice")


def test_default_branch_switch_and_a_pinned_ref(ws, remote):
    remote.write("docs/a.md", "Main branch text mainonly.")
    remote.commit(branch="main")
    remote.git("checkout", "--quiet", "-b", "next", cwd=remote.work)
    (remote.work / "docs" / "a.md").unlink()
    remote.write("docs/b.md", "Next branch text nextonly.")
    remote.commit(branch="next")
    ws.sources.add_kind("repo", "git", {"url": remote.url}, acl="everyone")
    ws.sources.add_kind("pinned", "git", {"url": remote.url, "ref": "main"}, acl="everyone")
    _sync(ws)
    assert _seen(ws, "mainonly") and not _seen(ws, "nextonly")
    remote.git("symbolic-ref", "HEAD", "refs/heads/next", cwd=remote.bare)  # the default branch is now next
    report = _sync(ws)
    assert (report.documents_added, report.documents_deleted) == (1, 1)
    assert _paths(ws, "nextonly") == {"docs/b.md"}
    [pinned] = ws.sync("pinned")
    assert pinned.documents_added == 1
    assert {h.source for h in ws.search("mainonly", ws.principal("bob"), 10) if "mainonly" in h.text} == {"pinned"}


def test_force_push_that_rewrites_history_is_followed(ws, remote):
    remote.write("docs/policy.md", "Policy v1: badges are blue badgeblue.")
    base = remote.commit("v1")
    remote.write("docs/leak.md", "An accidental commit with a secret leakedsecret.")
    remote.commit("oops")
    ws.sources.add_kind("repo", "git", {"url": remote.url}, acl="everyone")
    _sync(ws)
    assert _seen(ws, "leakedsecret")
    remote.git("reset", "--quiet", "--hard", base, cwd=remote.work)
    remote.write("docs/policy.md", "Policy v2: badges are green badgegreen.")
    rewritten = remote.commit("v2", force=True)
    report = _sync(ws)
    assert (report.documents_deleted, report.documents_updated) == (1, 1)
    assert not _seen(ws, "leakedsecret", "alice") and not _seen(ws, "badgeblue", "alice") and _seen(ws, "badgegreen")
    items = list(ws.sources.connector(ws.sources.get("repo")).scan())
    assert {i.metadata["commit"] for i in items} == {rewritten}


def test_symlink_is_skipped_and_missing_ref_fails_the_sync(ws, remote):
    remote.write("docs/real.md", "Real text realtext.")
    os.symlink("/etc/passwd", remote.work / "docs" / "passwd.md")
    remote.commit()
    ws.sources.add_kind("repo", "git", {"url": remote.url}, acl="everyone")
    report = _sync(ws)
    assert report.skipped == [{"file": "docs/passwd.md", "reason": "link"}] and report.documents_added == 1
    ws.sources.add_kind("gone", "git", {"url": remote.url, "ref": "no-such-branch"}, acl="everyone")
    with pytest.raises(IngestError, match="cannot fetch 'no-such-branch'"):
        ws.sync("gone")
    assert _seen(ws, "realtext")


@pytest.mark.parametrize("url", ["ext::sh -c touch% /tmp/bastion-pwned", "fd::17", "--upload-pack=touch x",
                                 "gopher://example.org/repo", "x::y", "https://example.org/a\n.git"])
def test_dangerous_transports_are_refused_before_anything_is_stored(options_ws, url):
    with pytest.raises(ConfigError, match="refused|not allowed"):
        options_ws.sources.add_kind("repo", "git", {"url": url}, acl="everyone")
    with pytest.raises(ConfigError, match="not a branch"):
        options_ws.sources.add_kind("repo", "git", {"url": "https://example.org/r.git", "ref": "--upload-pack=x"}, acl="")
    with pytest.raises(ConfigError, match="inlcude: unknown option"):
        options_ws.sources.add_kind("repo", "git", {"url": "https://example.org/r.git", "inlcude": "*.md"}, acl="")
    assert options_ws.sources.list() == []


def test_git_itself_refuses_remote_helpers_and_runs_no_hooks(ws, remote, tmp_path, monkeypatch):
    from bastion.connectors.git import GitConnector

    marker = tmp_path / "hook-ran"
    template = tmp_path / "template"
    (template / "hooks").mkdir(parents=True)
    hook = template / "hooks" / "reference-transaction"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    config = tmp_path / "gitconfig"
    config.write_text(f"[init]\n\ttemplateDir = {template}\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(config))
    remote.write("docs/a.md", "Hook test text hooktext.")
    remote.commit()
    # positive control: a plain git under this configuration runs the hook on a fetch
    subprocess.run(["git", "init", "--quiet", "--bare", str(tmp_path / "plain.git")], check=True)
    subprocess.run(["git", "-C", str(tmp_path / "plain.git"), "fetch", "--quiet", remote.url, "+main:refs/x"], check=True)
    assert marker.exists()
    marker.unlink()
    conn = GitConnector(url=remote.url, default_acl=frozenset({"everyone"}), cache_dir=str(tmp_path / "cache"))
    assert [i.key for i in conn.scan()] == ["docs/a.md"]
    assert not marker.exists()
    conn.url = f"ext::sh -c touch% {marker}"  # past the option check: git's own protocol rules refuse it
    with pytest.raises(IngestError, match="cannot fetch"):
        list(conn.scan())
    assert not marker.exists()
