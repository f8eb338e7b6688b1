"""IMAP sources end to end, against a real Dovecot server each test module starts on 127.0.0.1.

Mail is delivered with IMAP APPEND and removed with STORE \\Deleted + EXPUNGE, as a mail client
would; every test logs in as a mailbox user of its own. Nothing here is mocked.
"""
from __future__ import annotations

import contextlib
import json
import re
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime

import pytest
from imapclient import IMAPClient
from typer.testing import CliRunner

from bastion.core.errors import ConfigError, IngestError
from bastion.testing import HashEmbedder
from bastion.testing.connector_contract import ConnectorContract
from bastion.workspace import Workspace
from tests.conftest import EXAMPLES
from tests.connectors._dovecot import Dovecot, start_dovecot

PDF = EXAMPLES / "product" / "nw5000_spec_sheet.pdf"  # its page 2: "hybrid ceramic angular-contact bearings"
PW_ENV = "BASTION_TEST_IMAP_PASSWORD"


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot]:
    server = start_dovecot()
    yield server
    server.stop()


class Mailbox:
    """A fresh IMAP user on the server and a client that delivers and deletes its mail."""

    def __init__(self, server: Dovecot, *, tls: bool = False):
        self.server = server
        self.login, self.password = server.new_user()
        self.client = IMAPClient("127.0.0.1", server.port, ssl=False, timeout=10)
        if tls:
            self.client.starttls(ssl.create_default_context(cafile=str(server.ca_file)))
        self.client.login(self.login, self.password)

    def deliver(self, subject: str, body: str, *, folder: str = "INBOX", html: str | None = None,
                attachments: list[tuple[str, bytes, str]] = (), message_id: str | None = "",
                date: datetime | None = None) -> None:
        """Append a message; ``message_id=None``: one without a Message-ID header."""
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = subject, "Carol Sender <carol@example.com>", f"{self.login}@example.com"
        msg["Date"] = format_datetime(date or datetime.now().astimezone())
        if message_id is not None:
            msg["Message-ID"] = message_id or f"<{uuid.uuid4().hex}@example.com>"
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        for name, data, mime in attachments:
            maintype, subtype = mime.split("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        self.client.append(folder, msg.as_bytes(), msg_time=date)

    def delete(self, subject: str, folder: str = "INBOX") -> None:
        self.client.select_folder(folder)
        uids = self.client.search(["SUBJECT", subject])
        assert uids, f"no message {subject!r} to delete"
        self.client.delete_messages(uids)
        self.client.expunge()
        self.client.unselect_folder()

    def flags(self, folder: str = "INBOX") -> list[tuple[bytes, ...]]:
        self.client.select_folder(folder, readonly=True)
        found = self.client.fetch(self.client.search(["ALL"]), ["FLAGS"])
        self.client.unselect_folder()
        return [d[b"FLAGS"] for d in found.values()]


@pytest.fixture
def mailbox(dovecot) -> Iterator[Mailbox]:
    box = Mailbox(dovecot)
    yield box
    box.client.logout()


@pytest.fixture
def ws(tmp_path) -> Iterator[Workspace]:
    Workspace.init(tmp_path / "ws")
    w = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    w.directory.add_user("alice", groups=["staff"])
    w.directory.add_user("bob", groups=["staff"])
    w.directory.add_user("fiona", groups=["finance"])
    yield w
    w.close()


def add_source(ws: Workspace, box: Mailbox, monkeypatch, *, acl: str = "", **options):
    monkeypatch.setenv(PW_ENV, box.password)
    opts = {"host": "127.0.0.1", "port": box.server.port, "security": "plain", "username": box.login,
            "password_env": PW_ENV, "owner": "alice"} | options
    return ws.sources.add_kind("mail", "imap", opts, acl=acl)


def sync(ws: Workspace):
    [report] = ws.sync()
    return report


def counts(report) -> dict:
    c = report.counts()
    return {k.removeprefix("documents_"): c[k] for k in ("documents_added", "documents_updated", "documents_deleted",
                                                          "documents_unchanged", "documents_failed") if c[k]}


def found(ws: Workspace, query: str, user: str) -> dict[str, str]:
    """Document title -> its text, of what ``user`` finds for ``query`` with one of its words in the
    text (so a document that only ranks by vector similarity does not count)."""
    words = set(query.lower().split())
    out: dict[str, str] = {}
    for h in ws.search(query, ws.principal(user), 20):
        if words & set(re.findall(r"\w+", h.text.lower())):
            out[h.document] = out.get(h.document, "") + h.text
    return out


# -- indexing and access ----------------------------------------------------------------------
def test_message_and_pdf_attachment_are_indexed_for_the_mailbox_owner_only(ws, mailbox, monkeypatch):
    mailbox.deliver("Kiwi shipment delayed", "The quarterly kiwi shipment from Napier arrives on Friday.",
                    attachments=[("nw5000_spec.pdf", PDF.read_bytes(), "application/pdf"),
                                 ("logo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "image/png")])
    add_source(ws, mailbox, monkeypatch)
    report = sync(ws)
    assert counts(report) == {"added": 2}, report.errors  # the message and its PDF; no parser reads the PNG

    seen = found(ws, "kiwi shipment Napier", "alice")
    text = seen["Kiwi shipment delayed"]
    assert "The quarterly kiwi shipment from Napier arrives on Friday." in text
    assert "From: Carol Sender <carol@example.com>" in text and "Subject: Kiwi shipment delayed" in text
    assert "bearings" in "".join(found(ws, "hybrid ceramic angular-contact bearings", "alice").get("nw5000_spec.pdf", ""))

    # bob is another Bastion user: he finds neither the mail nor its attachment
    assert found(ws, "kiwi shipment Napier", "bob") == {}
    assert found(ws, "hybrid ceramic angular-contact bearings", "bob") == {}
    hit = ws.search("kiwi shipment Napier", ws.principal("alice"), 1)[0]
    assert hit.path.startswith("INBOX;MESSAGE-ID=<") and hit.path.endswith("@example.com>")
    # reading is done with BODY.PEEK: the owner's mail client still shows the message as unread
    assert all(b"\\Seen" not in flags for flags in mailbox.flags())


def test_shared_mailbox_is_readable_by_the_source_acl_too(ws, mailbox, monkeypatch):
    mailbox.deliver("Invoice 4471 approved", "Invoice 4471 for the pallet racks is approved for payment.")
    add_source(ws, mailbox, monkeypatch, acl="group:finance", owner="alice")
    assert counts(sync(ws)) == {"added": 1}
    assert "Invoice 4471 approved" in found(ws, "invoice pallet racks", "fiona")  # finance shares it
    assert "Invoice 4471 approved" in found(ws, "invoice pallet racks", "alice")  # the owner still does
    assert found(ws, "invoice pallet racks", "bob") == {}  # staff, not finance


def test_html_only_mail_is_indexed_as_text(ws, mailbox, monkeypatch):
    msg = EmailMessage()
    msg["Subject"], msg["From"] = "Menu", "canteen@example.com"
    msg.set_content("<html><body><h1>Canteen</h1><p>Thursday: pumpkin risotto.</p></body></html>", subtype="html")
    mailbox.client.append("INBOX", msg.as_bytes())
    add_source(ws, mailbox, monkeypatch)
    assert counts(sync(ws)) == {"added": 1}
    text = found(ws, "pumpkin risotto", "alice")["Menu"]
    assert "Thursday: pumpkin risotto." in text and "<p>" not in text


def test_attachment_names_in_any_script_and_nested_parts(ws, mailbox, monkeypatch):
    inner = EmailMessage()
    inner["Subject"], inner["From"] = "Forwarded original", "dan@example.com"
    inner.set_content("The forwarded text about the albatross.")
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["Message-ID"] = "Résumé attached", "carol@example.com", "<cv@example.com>"
    msg.set_content("Please find the résumé attached.")
    msg.add_alternative("<p>Please find the <b>résumé</b> attached.</p>", subtype="html")
    msg.add_attachment(b"Experience: ten years of albatross research.", maintype="text", subtype="plain",
                       filename="résumé 履歴書.txt")
    msg.add_attachment(inner)  # a forwarded message (message/rfc822): no parser reads it as a file
    mailbox.client.append("INBOX", msg.as_bytes())
    add_source(ws, mailbox, monkeypatch)
    report = sync(ws)
    assert counts(report) == {"added": 2}, report.errors
    seen = found(ws, "albatross résumé attached", "alice")
    assert set(seen) == {"Résumé attached", "résumé 履歴書.txt"}
    assert "Please find the résumé attached." in seen["Résumé attached"]
    assert "<b>" not in seen["Résumé attached"]  # the plain alternative was read, not the HTML one


# -- incremental ------------------------------------------------------------------------------
def test_new_mail_is_added_and_indexed_mail_is_not_read_again(ws, mailbox, monkeypatch):
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.",
                    attachments=[("notes.txt", b"Pallet count: forty-two pallets of kiwis.", "text/plain")])
    add_source(ws, mailbox, monkeypatch)
    assert counts(sync(ws)) == {"added": 2}

    mailbox.deliver("Mango shipment", "The mango shipment is on time.")
    report = sync(ws)
    assert counts(report) == {"added": 1, "unchanged": 2}, report.errors
    assert report.chunks_embedded == 1  # only the new message
    assert set(found(ws, "shipment pallets", "alice")) == {"Kiwi shipment delayed", "Mango shipment", "notes.txt"}

    report = sync(ws)
    assert counts(report) == {"unchanged": 3} and report.chunks_embedded == 0


def test_expunged_mail_and_its_attachments_leave_the_index(ws, mailbox, monkeypatch):
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.",
                    attachments=[("notes.txt", b"Pallet count: forty-two pallets of kiwis.", "text/plain")])
    mailbox.deliver("Mango shipment", "The mango shipment is on time.")
    add_source(ws, mailbox, monkeypatch)
    assert counts(sync(ws)) == {"added": 3}

    mailbox.delete("Kiwi shipment delayed")
    report = sync(ws)
    assert counts(report) == {"deleted": 2, "unchanged": 1}, report.errors
    assert set(found(ws, "kiwi mango shipment pallets", "alice")) == {"Mango shipment"}


def test_a_renumbered_mailbox_is_not_indexed_twice(ws, mailbox, monkeypatch):
    sent = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    mailbox.client.create_folder("Projects")

    def fill() -> None:
        mailbox.deliver("Bridge inspection", "The bridge inspection is booked for March.", folder="Projects",
                        message_id="<bridge-1@example.com>", date=sent)
        mailbox.deliver("Tunnel survey", "The tunnel survey needs two more weeks.", folder="Projects",
                        message_id=None, date=sent)

    fill()
    add_source(ws, mailbox, monkeypatch, mailboxes="Projects")
    assert counts(sync(ws)) == {"added": 2}
    paths = {h.document: h.path for h in ws.search("bridge inspection tunnel survey", ws.principal("alice"), 5)}
    assert paths["Bridge inspection"] == "Projects;MESSAGE-ID=<bridge-1@example.com>"
    assert paths["Tunnel survey"].startswith("Projects;UIDVALIDITY=") and paths["Tunnel survey"].endswith("/;UID=2")

    # a mailbox deleted and created again gets a new UIDVALIDITY: every UID in it is new
    mailbox.client.delete_folder("Projects")
    time.sleep(1.1)  # Dovecot derives UIDVALIDITY from the clock
    mailbox.client.create_folder("Projects")
    fill()
    report = sync(ws)
    # the message with a Message-ID keeps its document; the one without is indexed under its new UID
    assert counts(report) == {"added": 1, "deleted": 1, "unchanged": 1}, report.errors
    hits = ws.search("bridge inspection tunnel survey", ws.principal("alice"), 5)
    assert sorted(h.document for h in hits) == ["Bridge inspection", "Tunnel survey"]


def test_a_second_message_with_the_same_message_id_is_skipped(ws, mailbox, monkeypatch):
    mailbox.deliver("Original notice", "The original notice about the harbour crane.", message_id="<dup@example.com>")
    mailbox.deliver("Copy of notice", "A later copy about the harbour crane.", message_id="<dup@example.com>")
    add_source(ws, mailbox, monkeypatch)
    report = sync(ws)
    assert counts(report) == {"added": 1}
    [skip] = report.skipped
    assert skip["file"].endswith("/;UID=2") and "duplicate Message-ID <dup@example.com>" in skip["reason"]
    assert set(found(ws, "harbour crane notice", "alice")) == {"Original notice"}


def test_mailbox_patterns_choose_the_mailboxes(ws, mailbox, monkeypatch):
    for folder in ("Archive", "Archive.2024", "Spam"):
        mailbox.client.create_folder(folder)
        mailbox.deliver(f"Letter in {folder}", f"Filed under {folder}: the lighthouse keeper's report.", folder=folder)
    mailbox.deliver("Letter in INBOX", "Filed under INBOX: the lighthouse keeper's report.")
    add_source(ws, mailbox, monkeypatch, mailboxes=["INBOX", "Archive*"])
    assert counts(sync(ws)) == {"added": 3}
    assert set(found(ws, "lighthouse keeper report", "alice")) == {
        "Letter in INBOX", "Letter in Archive", "Letter in Archive.2024"}


def test_since_date_and_max_messages_limit_what_is_listed(ws, mailbox, monkeypatch):
    for n in range(3):
        mailbox.deliver(f"Note {n}", f"Note number {n} about the greenhouse.")
    add_source(ws, mailbox, monkeypatch, max_messages=2, since="2000-01-01")
    assert counts(sync(ws)) == {"added": 2}
    assert set(found(ws, "greenhouse note", "alice")) == {"Note 1", "Note 2"}  # the newest two


# -- bad input --------------------------------------------------------------------------------
def test_corrupt_attachment_is_reported_and_the_rest_is_indexed(ws, mailbox, monkeypatch):
    mailbox.deliver("Scanned contract", "The signed contract is attached.",
                    attachments=[("contract.pdf", b"%PDF-1.7 this is not really a PDF", "application/pdf")])
    add_source(ws, mailbox, monkeypatch)
    report = sync(ws)
    assert counts(report) == {"added": 1, "failed": 1}
    [error] = report.errors
    assert error["file"].endswith("/;SECTION=2") and "pdf" in error["reason"].lower()
    assert "Scanned contract" in found(ws, "signed contract attached", "alice")

    report = sync(ws)  # reported again, not retried while it is unchanged, and the message stays
    assert counts(report) == {"unchanged": 1, "failed": 1}


def test_oversize_attachment_is_reported_not_downloaded(ws, mailbox, monkeypatch):
    mailbox.deliver("Big export", "The export is attached.",
                    attachments=[("export.csv", b"id,name\n" + b"1,widget\n" * 150_000, "text/csv")])
    add_source(ws, mailbox, monkeypatch, max_mb=1)
    report = sync(ws)
    assert counts(report) == {"added": 1, "failed": 1}
    assert "over the 1 MiB limit (max_mb)" in report.errors[0]["reason"]


def test_wrong_password_fails_clearly_and_removes_nothing(ws, mailbox, monkeypatch):
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.")
    add_source(ws, mailbox, monkeypatch)
    assert counts(sync(ws)) == {"added": 1}

    monkeypatch.setenv(PW_ENV, "not-the-password")
    with pytest.raises(IngestError, match=rf"IMAP login as '{mailbox.login}' .* failed: .*password"):
        ws.sync()
    assert "Kiwi shipment delayed" in found(ws, "kiwi shipment", "alice")  # still searchable

    monkeypatch.delenv(PW_ENV)
    with pytest.raises(IngestError, match=rf"variable '{PW_ENV}' \(password_env\) is not set"):
        ws.sync()
    assert "Kiwi shipment delayed" in found(ws, "kiwi shipment", "alice")


def test_password_from_a_file(ws, mailbox, tmp_path):
    secret = tmp_path / "imap-password"
    secret.write_text(mailbox.password + "\n")
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.")
    ws.sources.add_kind("mail", "imap", {"host": "127.0.0.1", "port": mailbox.server.port, "security": "plain",
                                         "username": mailbox.login, "password_file": str(secret), "owner": "alice"})
    assert counts(sync(ws)) == {"added": 1}
    secret.write_text("")
    with pytest.raises(IngestError, match=r"password file .* is empty"):
        ws.sync()
    assert "Kiwi shipment delayed" in found(ws, "kiwi shipment", "alice")


def test_missing_mailbox_or_server_fails_clearly_and_removes_nothing(ws, mailbox, monkeypatch, dovecot):
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.")
    add_source(ws, mailbox, monkeypatch, mailboxes="INBOX,Projects")
    with pytest.raises(IngestError, match=r"mailbox 'Projects' does not exist"):
        ws.sync()
    ws.sources.add_kind("down", "imap", {"host": "127.0.0.1", "port": 1, "security": "plain", "username": "x",
                                         "password_env": PW_ENV, "owner": "alice"})
    with pytest.raises(IngestError, match=r"cannot connect to the IMAP server 127.0.0.1:1"):
        ws.sync("down")


@pytest.mark.parametrize(("options", "message"), [
    ({"password": "hunter2"}, "never stores a password"),
    ({"password_env": None}, "exactly one of password_env"),
    ({"host": "mail.example.com"}, "security=plain sends the password unencrypted"),
    ({"security": "ssl"}, "security: Input should be 'tls', 'starttls' or 'plain' (got 'ssl')"),
    ({"owner": "two words"}, "owner 'two words' is not a Bastion user name"),
    ({"owner": None}, "nobody could read this mailbox"),
    ({"since": "last week"}, "since: Input should be a valid date"),
    ({"mailboxes": 7}, "mailboxes: Input should be a valid list"),
    ({"mailboxes": " , "}, "mailboxes: List should have at least 1 item"),
    ({"max_messages": 0}, "max_messages: Input should be greater than or equal to 1"),
    ({"port": "imap"}, "port: Input should be a valid integer"),
    ({"ca_file": "/no/such/ca.pem", "security": "tls"}, "ca_file '/no/such/ca.pem' is not a file"),
    ({"folder": "INBOX"}, "folder: unknown option (known: attachments, ca_file, host, mailboxes"),
    ({"timeout": "soon"}, "timeout: Input should be a valid number"),
])
def test_invalid_options_are_refused_before_anything_is_stored(ws, options, message):
    opts = {"host": "127.0.0.1", "security": "plain", "username": "alice", "password_env": PW_ENV,
            "owner": "alice"} | options
    with pytest.raises(ConfigError) as err:
        ws.sources.add_kind("mail", "imap", opts)
    assert message in str(err.value)
    assert ws.sources.list() == []


def test_without_the_imap_extra_the_source_is_refused_naming_it(ws, monkeypatch):
    monkeypatch.setitem(sys.modules, "imapclient", None)  # as if imapclient were not installed
    with pytest.raises(ConfigError, match=r"pip install 'bastion\[imap\]'"):
        ws.sources.add_kind("mail", "imap", {"host": "127.0.0.1", "security": "plain", "username": "alice",
                                             "password_env": PW_ENV, "owner": "alice"})
    assert ws.sources.list() == []


# -- TLS --------------------------------------------------------------------------------------
def test_tls_and_starttls_verify_the_server_with_its_ca(ws, monkeypatch):
    server = start_dovecot(tls=True)
    try:
        box = Mailbox(server, tls=True)
        box.deliver("Encrypted hello", "This travelled over STARTTLS to the walrus.")
        monkeypatch.setenv(PW_ENV, box.password)
        base = {"host": "127.0.0.1", "port": server.port, "username": box.login, "password_env": PW_ENV,
                "owner": "alice", "security": "starttls"}
        ws.sources.add_kind("untrusted", "imap", base)
        with pytest.raises(IngestError, match=r"TLS with the IMAP server .* failed: .*certificate.*ca_file"):
            ws.sync("untrusted")
        ws.sources.add_kind("trusted", "imap", base | {"ca_file": str(server.ca_file)})
        [report] = ws.sync("trusted")
        assert counts(report) == {"added": 1}
        assert "Encrypted hello" in found(ws, "walrus STARTTLS", "alice")
        # implicit TLS (IMAPS) on its own port, the same CA
        ws.sources.add_kind("imaps", "imap", base | {"security": "tls", "port": server.tls_port,
                                                     "ca_file": str(server.ca_file), "owner": "bob"})
        [report] = ws.sync("imaps")
        assert counts(report) == {"added": 1}
        assert "Encrypted hello" in found(ws, "walrus STARTTLS", "bob")
        # a server that does not speak STARTTLS where it was asked for: refused, not sent in clear
        plain = start_dovecot()
        try:
            ws.sources.add_kind("no-starttls", "imap", base | {"port": plain.port, "ca_file": str(server.ca_file)})
            with pytest.raises(IngestError, match=r"refused STARTTLS"):
                ws.sync("no-starttls")
        finally:
            plain.stop()
        box.client.logout()
    finally:
        server.stop()


# -- CLI --------------------------------------------------------------------------------------
def test_cli_adds_and_syncs_an_imap_source(tmp_path, mailbox, monkeypatch):
    import bastion.cli.app as cli

    home = tmp_path / "ws"
    Workspace.init(home)
    w = Workspace.open(home, embedder=HashEmbedder())
    w.directory.add_user("alice")
    w.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    monkeypatch.setenv(PW_ENV, mailbox.password)
    mailbox.deliver("Kiwi shipment delayed", "The kiwi shipment arrives on Friday.")
    run = CliRunner().invoke
    r = run(cli.app, ["--home", str(home), "source", "add", "mail", "--kind", "imap", "-o", "host=127.0.0.1",
                      "-o", f"port={mailbox.server.port}", "-o", "security=plain", "-o", f"username={mailbox.login}",
                      "-o", f"password_env={PW_ENV}", "-o", "owner=alice", "-o", "mailboxes=INBOX"])
    assert r.exit_code == 0, r.output
    assert "added imap source mail" in r.output
    r = run(cli.app, ["--home", str(home), "sync", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["documents_added"] == 1
    stored = Workspace.open(home, embedder=HashEmbedder())
    try:
        assert mailbox.password not in json.dumps(stored.sources.get("mail").config)  # never in the catalog
    finally:
        stored.close()


# -- the connector contract -------------------------------------------------------------------
class ContractMailbox(Mailbox):
    """A mailbox on a server of its own, so the contract can stop it; one message per document."""

    def put(self, name: str, text: str) -> None:
        self.client.select_folder("INBOX")
        old = self.client.search(["HEADER", "Message-ID", f"<{name}@contract.example>"])
        if old:  # replaced by a message with the same Message-ID, as a mail client saves a draft again
            self.client.delete_messages(old)
            self.client.expunge()
        self.client.unselect_folder()
        self.deliver(name.title(), text, message_id=f"<{name}@contract.example>")

    def put_corrupt(self, name: str) -> None:
        """A message whose body claims base64 but is not: listed, cannot be read."""
        raw = (f"From: carol@example.com\r\nSubject: {name}\r\nMessage-ID: <{name}@contract.example>\r\n"
               "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n"
               "\r\n!!! this is not base64 at all !!!\r\n").encode()
        self.client.append("INBOX", raw)


class TestImapContract(ConnectorContract):
    per_document_acl = False  # a mailbox's documents share one ACL

    @pytest.fixture
    def backend(self) -> Iterator[ContractMailbox]:
        server = start_dovecot()
        box = ContractMailbox(server)
        # a patch of its own: the suite's monkeypatch.undo() must not unset the password
        with pytest.MonkeyPatch.context() as env:
            env.setenv(PW_ENV, box.password)
            yield box
        with contextlib.suppress(Exception):  # the server may have been stopped by the test
            box.client.logout()
        server.stop()

    def add_source(self, ws, name, backend, acl):
        ws.sources.add_kind(name, "imap", {"host": "127.0.0.1", "port": backend.server.port, "security": "plain",
                                           "username": backend.login, "password_env": PW_ENV}, acl=acl)

    def put_document(self, backend, name, text, *, acl=None):
        backend.put(name, text)

    def delete_document(self, backend, name):
        backend.delete(name.title())

    def break_document(self, backend, name):
        backend.put_corrupt(name)

    def make_unreachable(self, backend):
        backend.server.stop()
