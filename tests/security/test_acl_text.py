"""Finding 2: a comment containing a comma failed open, in ``.bastion-acl`` files and SQL ACL columns.

``parse_acl`` used to split the whole text on commas and new lines and only then drop the pieces
that began with ``#``, so ``# was: group:hr, everyone`` granted ``everyone``. The rules now
(src/bastion/core/types.py): a ``#`` at the start of a line, or after whitespace or a comma,
begins a comment that runs to the end of the line; only ``\\n`` ends a line (``\\r``, ``\\u2028``,
``\\x85``, ``\\x0b``, ``\\x0c`` do not); commas and new lines separate principals; one leading BOM
is ignored; a ``#`` inside a principal is invalid; principals are ``everyone``, ``user:<id>`` and
``group:<name>``; anything else raises :class:`AccessError`.

Attack: comment text stuffed with commas, principals, carriage returns, BOMs and Unicode line
separators. Positive control: the principals written outside comments are all granted, exactly.
"""
from __future__ import annotations

import sqlite3
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.core.errors import AccessError
from bastion.core.types import parse_acl
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

# -- generators -------------------------------------------------------------------------------

# A principal's id or name: any character but whitespace (str.isspace, which is what the
# product's \s and strip() use), ',' and '#'. A BOM is allowed inside a name: only a leading one
# is special.
_NAME_CHAR = st.characters(blacklist_categories=("Cs",)).filter(lambda c: not c.isspace() and c not in ",#")
_NAMES = st.one_of(st.sampled_from(["finance", "hr", "staff", "alice", "bob", "x.y@corp", "ø"]),
                   st.text(_NAME_CHAR, min_size=1, max_size=8))
PRINCIPALS = st.one_of(st.just("everyone"), st.builds("user:{}".format, _NAMES), st.builds("group:{}".format, _NAMES))

# Whitespace that may pad a principal inside a line: spaces and tabs, but also characters that
# other line splitters (str.splitlines) treat as line ends. They are not line ends here.
_PAD = st.text(st.sampled_from(" \t\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\u3000"), max_size=3)

# Comment text: no "\n" (that would end the comment), and full of what must never be granted.
_TRAPS = [",", ", ", "everyone", "group:hr", "user:mallory", ",everyone", " ,group:hr,", "#", " # ",
          "\r", "\ufeff", "\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e", "\r,everyone",
          "\u2028group:hr", "\x85,everyone", "\ufeffeveryone", "was: group:hr, everyone"]
COMMENT_TEXT = st.lists(st.one_of(st.sampled_from(_TRAPS), st.text(st.characters(blacklist_characters="\n"), max_size=6)),
                        max_size=6).map("".join)
# What may stand right before an inline '#': whitespace or a comma.
_COMMENT_LEAD = st.sampled_from([" ", "\t", ",", ", ", " ,", "\r", "\u2028", "\x85", "\x0b", "\x0c"])


@st.composite
def principal_line(draw) -> tuple[str, set[str]]:
    """Principals joined by commas with random padding, maybe an inline comment after them."""
    names = draw(st.lists(PRINCIPALS, min_size=1, max_size=4))
    text = draw(_PAD)
    for i, name in enumerate(names):
        if i:
            text += draw(_PAD) + "," + draw(_PAD)
        text += name
    text += draw(st.sampled_from(["", ",", " ,", ", "])) + draw(_PAD)
    if draw(st.booleans()):
        text += draw(_COMMENT_LEAD) + "#" + draw(COMMENT_TEXT)
    return text, set(names)


@st.composite
def comment_line(draw) -> tuple[str, set[str]]:
    """A line that is only a comment (maybe indented), whatever its text."""
    return draw(_PAD) + "#" + draw(COMMENT_TEXT), set()


BLANK_LINE = _PAD.map(lambda pad: (pad, set()))


@st.composite
def acl_texts(draw) -> tuple[str, frozenset[str]]:
    """(ACL text, the principals written outside its comments)."""
    lines = draw(st.lists(st.one_of(principal_line(), comment_line(), BLANK_LINE), min_size=1, max_size=6))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(line for line, _ in lines)
    if draw(st.booleans()):
        text = "\ufeff" + text
    expected: set[str] = set()
    for _, names in lines:
        expected |= names
    return text, frozenset(expected)


# -- an independent reference of the rules (no regular expression shared with the product) ----

def strip_comments(text: str) -> list[str]:
    """The lines of ``text`` (one leading BOM dropped, split on "\\n" only), each cut at the first
    '#' that starts the line or follows whitespace or a comma."""
    text = text.removeprefix("\ufeff")
    out = []
    for line in text.split("\n"):
        for i, ch in enumerate(line):
            if ch == "#" and (i == 0 or line[i - 1].isspace() or line[i - 1] == ","):
                line = line[:i]
                break
        out.append(line)
    return out


def _valid(p: str) -> bool:
    if p == "everyone":
        return True
    for prefix in ("user:", "group:"):
        if p.startswith(prefix):
            rest = p[len(prefix):]
            return bool(rest) and not any(c.isspace() or c in ",#" for c in rest)
    return False


def reference_acl(text: str) -> frozenset[str] | None:
    """The principals of ``text`` by the rules, or None where the text is invalid."""
    fields = [f.strip() for line in strip_comments(text) for f in line.split(",")]
    fields = [f for f in fields if f]
    return frozenset(fields) if all(_valid(f) for f in fields) else None


# -- properties -------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(acl_texts())
@example(("# Finance only. Previously readers: group:hr,everyone\ngroup:finance\n", frozenset({"group:finance"})))
@example(("group:finance  # was: group:hr, everyone\r\nuser:carol", frozenset({"group:finance", "user:carol"})))
@example(("group:finance,# old,everyone", frozenset({"group:finance"})))
@example(("\ufeff# x\u2028everyone, group:hr\ngroup:staff", frozenset({"group:staff"})))
@example(("group:staff # a\x85everyone\x0b,group:hr\x0c,everyone\r", frozenset({"group:staff"})))
def test_no_principal_ever_comes_from_a_comment(case):
    text, expected = case
    # exactly the principals written outside comments: nothing from a comment (the attack), and
    # nothing written outside a comment lost (the positive control: "deny everyone" cannot pass)
    assert parse_acl(text) == expected


_TOKENS = ["#", ",", "\n", "\r\n", "\r", " ", "\t", "\ufeff", "\u2028", "\x85", "\x0b", "\x0c", "everyone",
           "group:hr", "user:", "group:", "user:a#b", "# c, everyone", "#everyone"]
ANY_TEXT = st.one_of(st.text(), st.lists(st.one_of(st.sampled_from(_TOKENS), st.text(max_size=4)), max_size=12).map("".join))


@settings(max_examples=500, deadline=None)
@given(ANY_TEXT)
@example("# restricted: group:hr,everyone\ngroup:finance")
@example("group:fin#ance")
@example("\ufeff\ufeffeveryone")
@example("everyone\u2028group:hr")
def test_any_text_is_refused_or_grants_only_what_it_names_outside_comments(text):
    try:
        got = parse_acl(text)
    except AccessError:
        assert reference_acl(text) is None, "a valid ACL text was refused"
        return
    # never anything but AccessError (any other exception fails the test by propagating)
    assert isinstance(got, frozenset)
    visible = strip_comments(text)
    for principal in got:
        assert any(principal in line for line in visible), f"{principal!r} is only written inside a comment"
        assert _valid(principal)
    assert got == reference_acl(text)


def test_leading_bom_only_once_and_hash_inside_a_principal_is_invalid():
    assert parse_acl("\ufeffgroup:hr") == frozenset({"group:hr"})
    for bad in ("\ufeff\ufeffgroup:hr", "group:fin#ance", "user:bob#x", "finance team", "group:hr\u2028everyone"):
        try:
            parse_acl(bad)
        except AccessError:
            continue
        raise AssertionError(f"{bad!r} was accepted")


# -- the SQL ACL column (same parser, end to end) ------------------------------------------------

def test_sql_acl_column_comment_with_comma_grants_nothing(tmp_path: Path):
    db = tmp_path / "tickets.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE tickets (id INTEGER PRIMARY KEY, title TEXT, body TEXT, acl TEXT)")
        conn.executemany("INSERT INTO tickets VALUES (?, ?, ?, ?)", [
            (1, "Merger", "The zyxcorpcanary bonus pool is 3 million.", "# restricted: group:hr,everyone\ngroup:finance"),
            (2, "Canteen", "The canteencanary opens at noon.", "everyone"),
        ])
    conn.close()
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    try:
        ws.directory.add_user("alice", groups=["finance", "staff"])
        ws.directory.add_user("bob", groups=["staff"])
        ws.sources.add_sql("tickets", f"sqlite:///{db}", table="tickets", id_column="id",
                           template="{title}\n{body}", acl_column="acl", title_column="title")
        [report] = ws.sync()
        assert report.errors == [] and report.documents_added == 2

        def found(user: str) -> dict[str, str]:
            return {h.path: h.text for h in ws.search("zyxcorpcanary canteencanary bonus pool", ws.principal(user), 50,
                                                       mode="bm25")}

        bob = found("bob")
        assert "1" not in bob and not any("zyxcorpcanary" in t for t in bob.values())  # the attack
        assert "canteencanary" in bob.get("2", "")  # bob's search works: he sees the public row
        assert "zyxcorpcanary" in found("alice").get("1", "")  # positive control: finance reads it
    finally:
        ws.close()
