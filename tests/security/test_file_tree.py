"""Findings 1, 3 and 17 on random file trees: who can read what a folder source holds.

Hypothesis builds small trees of folders, files (each holding a unique canary token), links (to
files and to folders, inside the source and out of it, some dangling) and ``.bastion-acl`` files
(valid ones, some with commas in their comments; invalid ones; ones that are links, folders or
pipes), syncs each into a fresh workspace, and compares what every user can find with a reference
model written here from the rules of src/bastion/connectors/filesystem.py:

* links, to files or folders, are never followed; each visible one is reported as skipped
  (reason ``link``);
* hidden files and folders (a leading ``.``) are ignored;
* the nearest valid ``.bastion-acl`` sets its folder subtree's ACL, over the source default;
* a ``.bastion-acl`` that exists but is invalid or not a regular file withdraws its subtree:
  the documents there are failed with an error and nobody reads them, whatever lies below.

The model walks the real tree with ``os.lstat`` and never calls the connector. Both directions are
checked for every user: what a user finds is admitted by the model (the attack: under the old
connector a link to a restricted file took the link folder's ACL, a link to a withdrawn file
exposed it, a linked or folder ``.bastion-acl`` left its subtree on the source default, and a
comment with a comma granted ``everyone``; each of these makes some user find a canary the model
denies), and everything the model admits is found (the positive control: a connector that denied
everyone, or skipped everything, fails too).

The last tests swap a listed file or folder for a link (or a hard link, or a pipe) between the
listing and the read (finding 17): the read is refused, never served with the listing's ACL.
"""
from __future__ import annotations

import itertools
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bastion.connectors.filesystem import FilesystemConnector
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

USERS = {"alice": ["finance", "staff"], "bob": ["staff"], "carol": ["hr"], "dave": []}
CANARY = re.compile(r"canary(\d+)word")
POOL = ["group:finance", "group:staff", "group:hr", "everyone", "user:alice"]
COMMENTS = ["# was: group:hr, everyone", "# readers: everyone,group:staff,user:alice", "#everyone,group:hr",
            "# old\u2028everyone, group:hr\r", "# \x85group:staff,\x0beveryone\x0c,user:alice"]
INVALID_ACLS = [b"finance team\n", b"group:fin#ance\n", b"everyone\xff\n", "group:hr\u2028everyone\n".encode(),
                b"user:\n", b"# readers: hr, everyone\nstaff\n", "\ufeff\ufeffgroup:hr\n".encode()]
DEFAULTS = [("everyone", frozenset({"everyone"})), ("group:staff", frozenset({"group:staff"})),
            ("group:finance", frozenset({"group:finance"})), ("user:alice", frozenset({"user:alice"})),
            ("group:hr, user:alice # was: everyone, user:bob", frozenset({"group:hr", "user:alice"})),
            ("", frozenset())]


def labels(user: str) -> frozenset[str]:
    return frozenset({"everyone", f"user:{user}"} | {f"group:{g}" for g in USERS[user]})


# -- the plan of a tree -------------------------------------------------------------------------

@dataclass
class Plan:
    """What to build under a base folder; every path is relative to it (``docs/…`` is the source,
    ``outside/…`` lies beside it). ``meaning`` maps each ``.bastion-acl`` text to its principals,
    or to None where it is invalid."""

    default: tuple[str, frozenset[str]] = DEFAULTS[0]
    dirs: list[str] = field(default_factory=list)
    files: list[tuple[str, str]] = field(default_factory=list)
    acl_files: list[tuple[str, bytes]] = field(default_factory=list)
    acl_dirs: list[str] = field(default_factory=list)
    pipes: list[str] = field(default_factory=list)
    links: list[tuple[str, str, bool]] = field(default_factory=list)  # (link, target, absolute)
    meaning: dict[bytes, frozenset[str] | None] = field(default_factory=dict)


def outside_part(plan: Plan, canaries: itertools.count) -> None:
    """A folder beside the source, with canaries and a permissive ``.bastion-acl`` to link to."""
    plan.dirs += ["docs", "outside", "outside/sub"]
    plan.files += [("outside/o.txt", f"Outside note canary{next(canaries)}word."),
                   ("outside/sub/o.txt", f"Outside sub note canary{next(canaries)}word.")]
    plan.acl_files.append(("outside/.bastion-acl", b"everyone\n"))
    plan.meaning[b"everyone\n"] = frozenset({"everyone"})


@st.composite
def valid_acl(draw) -> tuple[bytes, frozenset[str]]:
    """A valid ACL text from POOL, with comments (full-line and inline) full of commas."""
    # now and then no principal at all: a valid text that admits nobody
    names = draw(st.lists(st.sampled_from(POOL), min_size=0 if draw(st.integers(0, 9)) == 0 else 1, max_size=3,
                          unique=True))
    lines: list[str] = []
    open_line = False  # whether the last line can take another principal (it has no comment yet)
    for name in names:
        if open_line and draw(st.booleans()):
            lines[-1] += draw(st.sampled_from([",", ", ", " ,\t"])) + name
        else:
            lines.append(name)
        open_line = True
        if draw(st.booleans()):
            lines[-1] += draw(st.sampled_from([" ", ",", "\t", ", "])) + draw(st.sampled_from(COMMENTS))
            open_line = False
    for comment in draw(st.lists(st.sampled_from(COMMENTS), max_size=2)):
        lines.insert(draw(st.integers(0, len(lines))), comment)
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + draw(st.sampled_from(["", "\n"]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    return text.encode("utf-8"), frozenset(names)


@st.composite
def plans(draw) -> Plan:
    plan = Plan(default=draw(st.sampled_from(DEFAULTS)))
    canaries = itertools.count()
    outside_part(plan, canaries)
    folders: list[str] = ["docs"]
    acl_links: list[str] = []

    def fill(folder: str, depth: int) -> None:
        # a .bastion-acl that withdraws its subtree: 1 in 3 below the root, 1 in 7 at the root (where it
        # would leave nothing to read)
        kind = draw(st.sampled_from([None] * 3 + ["valid"] * 3 + ["withdraw"] * (3 if depth else 1)))
        if kind == "withdraw":
            kind = draw(st.sampled_from(["invalid", "link", "folder", "pipe"]))
        acl = f"{folder}/.bastion-acl"
        if kind == "valid":
            text, names = draw(valid_acl())
            plan.acl_files.append((acl, text))
            plan.meaning[text] = names
        elif kind == "invalid":
            text = draw(st.sampled_from(INVALID_ACLS))
            plan.acl_files.append((acl, text))
            plan.meaning[text] = None
        elif kind == "folder":  # a folder named .bastion-acl, with a canary inside that nobody may read
            plan.acl_dirs.append(acl)
            plan.files.append((f"{acl}/in.txt", f"Inside an ACL folder canary{next(canaries)}word."))
        elif kind == "pipe":
            plan.pipes.append(acl)
        elif kind == "link":  # made below, once every target exists
            acl_links.append(acl)
        for _ in range(draw(st.integers(1 if depth == 0 else 0, 3))):
            n = next(canaries)
            name = f".h{n}.txt" if draw(st.integers(0, 5)) == 5 else f"f{n}.txt"
            plan.files.append((f"{folder}/{name}", f"Note {n} holds canary{n}word for the test."))
        if depth < 3:
            for _ in range(draw(st.integers(0, 2 if depth == 0 else 1))):
                sub = f"{folder}/{'.hd' if draw(st.integers(0, 5)) == 5 else 'd'}{next(canaries)}"
                plan.dirs.append(sub)
                folders.append(sub)
                fill(sub, depth + 1)

    fill("docs", 0)
    # links, once every target exists: to files and folders, inside and outside, some dangling
    file_targets = [p for p, _ in plan.files] + ["outside/missing.txt", "docs/missing.txt"]
    dir_targets = folders + ["outside", "outside/sub"]
    for k in range(draw(st.integers(0, 4))):
        where = draw(st.sampled_from(folders))
        if draw(st.booleans()):
            plan.links.append((f"{where}/l{k}.txt", draw(st.sampled_from(file_targets)), draw(st.booleans())))
        else:
            plan.links.append((f"{where}/ld{k}", draw(st.sampled_from(dir_targets)), draw(st.booleans())))
    # a .bastion-acl that is a link: to a valid one (in the source or outside), a folder, or nothing
    acl_targets = ([p for p, text in plan.acl_files if plan.meaning[text] is not None]
                   + ["docs", "outside/missing-acl"])
    for acl in acl_links:
        plan.links.append((acl, draw(st.sampled_from(acl_targets)), draw(st.booleans())))
    return plan


def build(base: Path, plan: Plan) -> None:
    for d in plan.dirs + plan.acl_dirs:
        (base / d).mkdir(parents=True, exist_ok=True)
    for path, text in plan.files:
        (base / path).write_text(text, encoding="utf-8")
    for path, data in plan.acl_files:
        (base / path).write_bytes(data)
    for path in plan.pipes:
        os.mkfifo(base / path)
    for path, target, absolute in plan.links:
        link = base / path
        os.symlink(base / target if absolute else os.path.relpath(base / target, link.parent), link)


# -- the reference model ----------------------------------------------------------------------

@dataclass
class Expected:
    acl: dict[int, frozenset[str] | None] = field(default_factory=dict)  # canary -> its ACL, None: withdrawn
    links: set[str] = field(default_factory=set)  # what the sync must report as skipped links
    withdrawn: set[str] = field(default_factory=set)  # documents the sync must fail

    def readable(self, user: str) -> set[int]:
        mine = labels(user)
        return {c for c, acl in self.acl.items() if acl is not None and acl & mine}


def reference(root: Path, default: frozenset[str], meaning: dict[bytes, frozenset[str] | None]) -> Expected:
    """Walk the real tree without following any link, applying the rules in the module docstring."""
    out = Expected()

    def folder_acl(folder: Path, inherited: frozenset[str] | None) -> frozenset[str] | None:
        if inherited is None:
            return None  # withdrawn stays withdrawn, whatever a subfolder says
        acl_file = folder / ".bastion-acl"
        try:
            st_ = os.lstat(acl_file)
        except FileNotFoundError:
            return inherited
        if not stat.S_ISREG(st_.st_mode):
            return None  # a link, a folder, a pipe: fail closed
        return meaning[acl_file.read_bytes()]  # a regular file in a folder reached without links

    def walk(folder: Path, rel: str, inherited: frozenset[str] | None) -> None:
        acl = folder_acl(folder, inherited)
        for name in sorted(os.listdir(folder)):
            if name.startswith("."):
                continue
            path, key = folder / name, f"{rel}{name}"
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                out.links.add(key)
            elif stat.S_ISDIR(mode):
                walk(path, f"{key}/", acl)
            elif stat.S_ISREG(mode) and name.endswith(".txt"):
                [canary] = CANARY.findall(path.read_text(encoding="utf-8"))
                out.acl[int(canary)] = acl
                if acl is None:
                    out.withdrawn.add(key)

    walk(root, "", default)
    return out


# -- the check ---------------------------------------------------------------------------------

def check_tree(plan: Plan) -> Expected:
    base = Path(tempfile.mkdtemp(prefix="bastion-tree-"))
    ws = None
    try:
        build(base, plan)
        expected = reference(base / "docs", plan.default[1], plan.meaning)
        every = sorted({int(c) for _, text in plan.files for c in CANARY.findall(text)})
        Workspace.init(base / "ws")
        ws = Workspace.open(base / "ws", embedder=HashEmbedder())
        for user, groups in USERS.items():
            ws.directory.add_user(user, groups=groups)
        ws.sources.add_folder("docs", base / "docs", acl=plan.default[0])
        [report] = ws.sync()

        assert report.status == "completed", report.quarantined

        query = " ".join(f"canary{c}word" for c in every)
        for user in USERS:
            principal = ws.principal(user)
            by_term = ws.search(query, principal, 1000, mode="bm25")  # every exact token
            listed = ws.search("canary note", principal, 1000, mode="dense")  # every chunk the user may read
            found_by_term = {int(c) for h in by_term for c in CANARY.findall(h.text)}
            found_listed = {int(c) for h in listed for c in CANARY.findall(h.text)}
            allowed = expected.readable(user)
            leaked = (found_by_term | found_listed) - allowed
            assert not leaked, f"{user} read canaries {sorted(leaked)} the rules deny: {expected.acl}"
            assert found_by_term == allowed, f"{user} misses canaries {sorted(allowed - found_by_term)} (bm25)"
            assert found_listed == allowed, f"{user} misses canaries {sorted(allowed - found_listed)} (listing)"

        # what the sync reports: every link skipped as a link, every withdrawn document failed
        skipped = {(s["file"], s["reason"]) for s in report.skipped}
        assert skipped == {(key, "link") for key in expected.links}
        failed = {e["file"]: e["reason"] for e in report.errors if e["file"] is not None}
        assert set(failed) == expected.withdrawn, report.errors
        assert all(".bastion-acl" in reason for reason in failed.values()), failed
        return expected
    finally:
        if ws is not None:
            ws.close()
        shutil.rmtree(base, ignore_errors=True)


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plans())
def test_random_trees_every_user_reads_exactly_what_the_rules_admit(plan):
    expected = check_tree(plan)
    # what the examples covered (pytest --hypothesis-show-statistics)
    event(f"links reported: {min(len(expected.links), 3)}{'+' if len(expected.links) >= 3 else ''}")
    event("some documents withdrawn" if expected.withdrawn else "nothing withdrawn")
    event(f"users who read something: {sum(bool(expected.readable(u)) for u in USERS)}")
    event(f"documents denied to bob: {bool(set(expected.acl) - expected.readable('bob'))}")


def test_the_review_trees_every_user_reads_exactly_what_the_rules_admit():
    """The reproductions of findings 1, 2 and 3, through the same check (runs on every CI run)."""
    plan = Plan(default=DEFAULTS[0])
    canaries = itertools.count(100)
    outside_part(plan, canaries)
    plan.dirs += ["docs/public", "docs/secret", "docs/invalid", "docs/commacl", "docs/symacl", "docs/diracl",
                  "docs/invalid/fixed"]
    secret_acl, comma_acl = b"group:finance\n", b"# Finance only. Previously readers: group:hr,everyone\ngroup:finance\n"
    plan.acl_files += [("docs/secret/.bastion-acl", secret_acl), ("docs/invalid/.bastion-acl", b"not a principal\n"),
                       ("docs/commacl/.bastion-acl", comma_acl), ("docs/invalid/fixed/.bastion-acl", b"everyone\n")]
    plan.meaning |= {secret_acl: frozenset({"group:finance"}), comma_acl: frozenset({"group:finance"}),
                     b"not a principal\n": None}
    plan.acl_dirs.append("docs/diracl/.bastion-acl")
    plan.files += [("docs/public/p.txt", "Public canary1word."), ("docs/secret/merger.txt", "Falcon canary2word."),
                   ("docs/invalid/i.txt", "Invalid canary3word."), ("docs/commacl/bonus.txt", "Bonus canary4word."),
                   ("docs/symacl/plan.txt", "Symlinked ACL canary5word."), ("docs/diracl/d.txt", "Dir ACL canary6word."),
                   ("docs/invalid/fixed/f.txt", "Still withdrawn canary7word.")]
    plan.links += [("docs/public/link_to_secret.txt", "docs/secret/merger.txt", False),
                   ("docs/public/link_to_invalid.txt", "docs/invalid/i.txt", False),
                   ("docs/public/link_outside.txt", "outside/o.txt", True),
                   ("docs/public/outdir", "outside", True),
                   ("docs/symacl/.bastion-acl", "docs/secret/.bastion-acl", False)]
    expected = check_tree(plan)
    # the reference itself, pinned: only the public file for bob, carol and dave; finance adds its two
    assert {u: expected.readable(u) for u in USERS} == {"alice": {1, 2, 4}, "bob": {1}, "carol": {1}, "dave": {1}}
    assert expected.withdrawn == {"invalid/i.txt", "invalid/fixed/f.txt", "symacl/plan.txt", "diracl/d.txt"}
    assert expected.links == {"public/link_to_secret.txt", "public/link_to_invalid.txt", "public/link_outside.txt",
                              "public/outdir"}


# -- finding 17: swapped between listing and reading --------------------------------------------

def _share(root: Path) -> dict:
    """A share with public and secret files (and one outside it), listed once: key -> item."""
    (root / "public" / "inner").mkdir(parents=True)
    (root / "secret").mkdir()
    (root.parent / "outside").mkdir()
    (root / "secret" / ".bastion-acl").write_text("group:finance\n")
    for rel, text in {"public/a.txt": "public a", "public/b.txt": "public b", "public/c.txt": "public c",
                      "public/d.txt": "public d", "public/inner/x.txt": "public inner x",
                      "secret/s.txt": "SECRET-S", "secret/inner/x.txt": "SECRET-INNER-X",
                      "../outside/o.txt": "SECRET-OUTSIDE"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    conn = FilesystemConnector(root, default_acl=frozenset({"everyone"}))
    return {i.key: i for i in conn.scan()}


def _refused(item, secret: bytes) -> None:
    """``item.load()`` raises OSError, within 10 s (a pipe must not block), and leaks nothing."""
    result: list = []

    def read():
        try:
            result.append(item.load())
        except OSError as exc:
            result.append(exc)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), f"reading {item.key} blocked"
    [got] = result
    assert isinstance(got, OSError), f"{item.key} was read after the swap: {got[:40]!r}"
    assert secret not in str(got).encode()


def test_a_listed_file_swapped_for_a_link_a_hard_link_or_a_pipe_is_refused(tmp_path):
    root = tmp_path / "share"
    items = _share(root)
    assert items["public/a.txt"].acl == frozenset({"everyone"})
    for rel in ("a", "b", "c", "d"):
        os.unlink(root / f"public/{rel}.txt")
    os.symlink("../secret/s.txt", root / "public/a.txt")  # into a restricted folder, relative
    os.symlink(tmp_path / "outside/o.txt", root / "public/b.txt")  # out of the root, absolute
    os.link(root / "secret/s.txt", root / "public/c.txt")  # a hard link: the same secret inode, no link to see
    os.mkfifo(root / "public/d.txt")  # a pipe: must not block the sync
    _refused(items["public/a.txt"], b"SECRET-S")
    _refused(items["public/b.txt"], b"SECRET-OUTSIDE")
    _refused(items["public/c.txt"], b"SECRET-S")
    _refused(items["public/d.txt"], b"SECRET")
    # positive control: untouched items still read, the secret one too (under its own ACL)
    assert items["public/inner/x.txt"].load() == b"public inner x"
    assert items["secret/s.txt"].load() == b"SECRET-S"
    assert items["secret/s.txt"].acl == frozenset({"group:finance"})


@pytest.mark.parametrize("swapped", ["public", "public/inner"])
def test_a_listed_folder_on_the_way_swapped_for_a_link_is_refused(tmp_path, swapped):
    root = tmp_path / "share"
    items = _share(root)
    # the secret folder gets the same layout, so a read that follows the link finds a file there
    (root / "secret/a.txt").write_text("SECRET-A")
    os.rename(root / swapped, tmp_path / "moved-away")
    target = root / "secret" if swapped == "public" else root / "secret/inner"
    os.symlink(target, root / swapped, target_is_directory=True)
    _refused(items["public/inner/x.txt"], b"SECRET-INNER-X")
    if swapped == "public":
        _refused(items["public/a.txt"], b"SECRET-A")
    # positive control: an untouched item still reads
    assert items["secret/s.txt"].load() == b"SECRET-S"
