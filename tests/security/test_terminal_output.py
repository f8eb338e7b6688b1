"""Finding 8: untrusted text reaches the terminal as plain text.

Documents (text, titles, file names), queries, user and group names, key names and audit targets
are printed without Rich markup and with control characters escaped (``\\x1b``, ``\\x07``,
``\\x9b``, ``\\u202e``, ``\\n`` where a field is one line). Attack: markup that crashed the command
(``[/x]``), hid text (``[white on white]``), linked (``[link=…]``), and raw ESC / OSC / C1 / bidi
sequences. Positive control: the user still sees that text, literally, and ``--json`` keeps its
content.
"""
from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import write
from tests.server.conftest import auth

OSC_TITLE = "\x1b]0;PWNED\x07"
CONCEAL = "\x1b[8mconcealed\x1b[0m"
MARKUP = "[/x] [white on white]hidden[/] [link=file:///etc/passwd]x[/link]"
HOSTILE = f"{MARKUP} {OSC_TITLE} {CONCEAL}"
# a file name cannot hold '/', so no closing tag; an unclosed tag styles everything after it
NAME = f"[white on white]hidden {OSC_TITLE} {CONCEAL}"
GROUP = "ops\x9b8m\u202eevil"  # C1 CSI and a bidi override: the directory accepts both
KEY_NAME = f"[/k] {OSC_TITLE} laptop"
AUDIT_TARGETS = ["hello [/audit] world",
                 "[white on white]bob exfiltrated everything[/] innocent query",
                 f"esc {OSC_TITLE} \x1b[8mhidden-by-conceal\x1b[0m end",
                 "two\nlines\rback",
                 "c1 \x9b31m csi \u202e rlo"]
ASK = f"quokkagamma soup {MARKUP} {OSC_TITLE}?"
HEALTHY = ["The hotel cap is 180 euro per night.", "Annual leave is 28 working days.",
           "Salaries are paid on the 25th.", "Lock your screen when you leave.",
           "Submit receipts within thirty days.", "Staff may work from home two days a week."]
# what must never reach the terminal, color or not
NEVER = [OSC_TITLE, "\x1b]0;", "\x1b[8m", "\x07", "\x9b", "\u202e", "\x1b[37;47m", "\x1b]8;"]

# Runs CLI commands in a fresh interpreter, so that FORCE_COLOR / COLUMNS apply when the consoles
# are created; the workspace opens on the hash embedder (no model download).
RUNNER = r"""
import json, sys, traceback
from typer.testing import CliRunner
import bastion.cli.app as cli
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

spec = json.loads(sys.stdin.read())

def open_ws():
    ws = Workspace.open(spec["home"], embedder=HashEmbedder())
    ws.config.answer.min_evidence = -1.0  # hash scores say nothing about evidence
    return ws

cli._ws = open_ws
found, results = {}, []
for args in spec["commands"]:
    args = [a.format(**found) for a in args]
    r = CliRunner().invoke(cli.app, ["--home", spec["home"], *args])
    tb = None
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        tb = "".join(traceback.format_exception(*r.exc_info))
    if "--json" in args and r.exit_code == 0:
        data = json.loads(r.stdout)
        if isinstance(data, dict) and data.get("lineage_id"):
            found["lineage"] = data["lineage_id"]
    results.append({"args": args, "exit_code": r.exit_code, "stdout": r.stdout, "stderr": r.stderr, "traceback": tb})
sys.stdout.write(json.dumps(results))
"""

COMMANDS = [
    ["sync"],
    ["search", "quokkagamma soup", "--as", "bob"],
    ["search", "quokkagamma soup", "--as", "bob", "--json"],
    ["ask", ASK, "--as", "bob", "--mode", "extract"],
    ["ask", ASK, "--as", "bob", "--mode", "extract", "--json"],  # its lineage id: for lineage show / trace
    ["lineage", "show", "{lineage}"],
    ["lineage", "trace", "{lineage}"],
    ["lineage", "list"],
    ["user", "list"],
    ["user", "list", "--json"],
    ["group", "list"],
    ["key", "list"],
    ["audit", "list", "--limit", "20"],
    ["audit", "export"],
    ["monitor", "status"],
    ["search", "soup", "--as", f"nobody {MARKUP} {OSC_TITLE}"],  # an error message quoting the value
]


def _workspace(root: Path) -> Path:
    from bastion.accounts import Accounts
    from bastion.testing import HashEmbedder
    from bastion.workspace import Workspace

    docs = root / "docs"
    for i, text in enumerate(HEALTHY):  # enough healthy documents that the sync is published
        write(docs / f"ok{i}.md", f"# Policy {i}\n\n{text}\n")
    write(docs / f"menu {NAME}.md", f"# Title {HOSTILE}\n\nquokkagamma soup {HOSTILE} end.\n")
    write(docs / f"broken {NAME}.pdf", b"%PDF-1.4 not really " + HOSTILE.encode())  # sync prints its name
    Workspace.init(root / "ws")
    ws = Workspace.open(root / "ws", embedder=HashEmbedder())
    ws.directory.add_user("bob", groups=["staff", GROUP])
    ws.sources.add_folder("docs", docs, acl="everyone")
    Accounts(ws.catalog).create_key("bob", name=KEY_NAME)
    for target in AUDIT_TARGETS:  # as the server records a member's searches
        ws.audit.record(actor="bob", via="key", action="search", outcome="ok", target=target, detail={"hits": 1})
    ws.close()
    return root / "ws"


def _run(home: Path, color: bool) -> dict[str, dict]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "NO_COLOR", "TERM", "COLUMNS")}
    path = os.pathsep.join(p for p in (str(Path(__file__).parents[2]), env.get("PYTHONPATH")) if p)
    env.update(COLUMNS="400", TERM="xterm-256color" if color else "dumb", PYTHONPATH=path)
    if color:
        env["FORCE_COLOR"] = "1"
    proc = subprocess.run([sys.executable, "-c", RUNNER], check=False, input=json.dumps({"home": str(home), "commands": COMMANDS}),
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {" ".join(r["args"][:2] + (["--json"] if "--json" in r["args"] else [])): r for r in json.loads(proc.stdout)}


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "force-color"])
def runs(request, tmp_path_factory):
    return request.param, _run(_workspace(tmp_path_factory.mktemp("term")), request.param)


def _out(r: dict) -> str:
    return r["stdout"] + r["stderr"]


def _text(r: dict) -> str:
    """What the user reads: the output without Rich's own styling and cursor sequences (when color is
    forced). Only for looking for text: the hostile sequences are looked for in the raw output."""
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", _out(r))


def test_no_command_crashes_and_no_hostile_sequence_reaches_the_terminal(runs):
    color, results = runs
    assert len(results) == len(COMMANDS)
    for name, r in results.items():
        assert r["traceback"] is None, f"{name}:\n{r['traceback']}"
        # sync: 4, the broken PDF failed (and is listed); the rest was published
        expected = 2 if r["args"][-1].startswith("nobody") else 4 if name == "sync" else 0
        assert r["exit_code"] == expected, f"{name}: {_out(r)}"
        for bad in NEVER:
            assert bad not in _out(r), f"{name} printed {bad!r}"
        if not color:  # without color nothing at all may emit ESC: it can only come from the data
            assert "\x1b" not in _out(r), f"{name}: {_out(r)!r}"


def test_document_text_titles_and_file_names_are_shown_literally(runs):
    _, results = runs
    sync = _text(results["sync"])
    assert "failed broken [white on white]hidden \\x1b]0;PWNED\\x07 \\x1b[8mconcealed\\x1b[0m.pdf" in sync
    search = _text(results["search quokkagamma soup"])
    assert MARKUP in search  # the positive control: the document's text, as text
    assert "\\x1b]0;PWNED\\x07 \\x1b[8mconcealed\\x1b[0m" in search
    assert f"menu {NAME}".replace("\x1b", "\\x1b").replace("\x07", "\\x07") in search
    ask = _text(results[f"ask {ASK}"])
    assert "Quotes from the sources" in ask and MARKUP in ask and "\\x1b[8mconcealed" in ask
    show = _text(results["lineage show"])
    assert f"question: quokkagamma soup {MARKUP} \\x1b]0;PWNED\\x07?" in show
    assert "[white on white]hidden \\x1b]0;PWNED" in show  # the cited file name
    assert "[white on white]hidden \\x1b]0;PWNED" in _text(results["lineage trace"])
    assert "[/x] [white on white]hidden[/]" in _text(results["lineage list"])


def test_user_group_key_and_audit_values_are_shown_literally(runs):
    _, results = runs
    shown = "ops\\x9b8m\\u202eevil"
    assert shown in _text(results["user list"]) and shown in _text(results["group list"])
    assert "[/k] \\x1b]0;PWNED\\x07 laptop" in _text(results["key list"])
    audit = _text(results["audit list"])
    assert "hello [/audit] world" in audit
    assert "[white on white]bob exfiltrated everything[/] innocent query" in audit
    assert "esc \\x1b]0;PWNED\\x07 \\x1b[8mhidden-by-conceal\\x1b[0m end" in audit
    assert "two\\nlines\\rback" in audit  # one entry stays one line: no forged rows
    assert "c1 \\x9b31m csi \\u202e rlo" in audit
    error = _text(results["search soup"])
    assert "error:" in error and f"nobody {MARKUP} \\x1b]0;PWNED\\x07" in error


def test_json_output_keeps_its_content_and_escapes_every_control_character(runs):
    _, results = runs
    for name in ("search quokkagamma soup --json", f"ask {ASK} --json", "user list --json"):
        raw = results[name]["stdout"]
        assert not any(c in raw for c in "\x1b\x07\x9b\u202e"), name  # escaped inside the JSON strings
        json.loads(raw)
    hits = json.loads(results["search quokkagamma soup --json"]["stdout"])
    assert any(HOSTILE in h["text"] for h in hits) and any(h["path"] == f"menu {NAME}.md" for h in hits)
    users = json.loads(results["user list --json"]["stdout"])
    assert GROUP in next(u for u in users if u["user"] == "bob")["groups"]
    exported = results["audit export"]["stdout"]  # JSON Lines
    assert not any(c in exported for c in "\x1b\x07\x9b\u202e")
    assert [e["target"] for e in map(json.loads, exported.splitlines()) if e["action"] == "search"] == AUDIT_TARGETS


def test_an_unexpected_error_prints_its_traceback_plainly(capsys):
    from bastion.cli.output import install_excepthook

    saved = sys.excepthook
    try:
        install_excepthook()
        try:
            raise ValueError(f"doc {OSC_TITLE} [/x]")
        except ValueError:
            sys.excepthook(*sys.exc_info())
    finally:
        sys.excepthook = saved
    err = capsys.readouterr().err
    assert "Traceback" in err and "\\x1b]0;PWNED\\x07 [/x]" in err and "\x1b" not in err and "\x07" not in err


def test_audit_list_after_hostile_searches_over_the_api(client, served):
    """The review's reproduction: a member's queries through the server, the admin's `audit list`."""
    from typer.testing import CliRunner

    from bastion.cli.app import app

    for q in AUDIT_TARGETS[:3]:
        assert client.post("/api/v1/search", json={"query": q, "k": 1}, headers=auth(served.keys["bob"])).status_code == 200
    r = CliRunner().invoke(app, ["--home", str(served.ws.home), "audit", "list", "--actor", "bob", "--action", "search"])
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert r.exit_code == 0 and "[/audit]" in r.output
    assert "\x1b" not in r.output and "\x07" not in r.output


# -- the helpers themselves -----------------------------------------------------------------
def test_clean_and_plain_escape_each_kind_of_control_character():
    from bastion.cli.output import clean, plain

    assert clean("a\x1b[8mb\x07c\x00d\x7fe\x9bf\u202eg\u2066h") == "a\\x1b[8mb\\x07c\\x00d\\x7fe\\x9bf\\u202eg\\u2066h"
    assert clean("one\ttwo\nthree\r") == "one\\ttwo\\nthree\\r"
    assert clean("one\ttwo\nthree\r", multiline=True) == "one\ttwo\nthree\\r"
    assert clean("[/x] 报销 C:\\share ü") == "[/x] 报销 C:\\share ü"  # everything else is left alone
    t = plain("[bold]x[/] \x1b", "cyan")
    assert t.plain == "[bold]x[/] \\x1b" and t.style == "cyan" and not t.spans


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=60))
def test_the_console_prints_any_string_plainly(s):
    from bastion.cli.output import PlainConsole, Table, clean

    for color in (False, True):
        buf = io.StringIO()
        con = PlainConsole(file=buf, width=400, force_terminal=color, color_system="truecolor" if color else None)
        con.print(s)
        con.print(f"[bold]{s}")
        table = Table("cell")
        table.add_row(s)
        con.print(table)
        out = buf.getvalue()
        if color:
            out = out.replace("\x1b[1m", "").replace("\x1b[0m", "")  # the table header's own style
        assert not any(c in out for c in "\x00\x07\x1b\x7f\x9b\u202e"), repr(out)
        if "\x1b" not in s and s.isprintable() and s.strip() == s and "  " not in s:
            assert clean(s) in out


def test_error_messages_are_plain(capsys):
    import typer

    from bastion.cli.output import friendly_errors
    from bastion.core.errors import ConfigError

    with pytest.raises(typer.Exit), friendly_errors():
        raise ConfigError(f"--mode '[/x]{OSC_TITLE}': use hybrid")
    err = capsys.readouterr().err
    assert "error: --mode '[/x]\\x1b]0;PWNED\\x07': use hybrid" in err and "\x1b" not in err
