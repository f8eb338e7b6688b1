"""``GET /api/v1/documents/{id}/original`` for S3, Git, IMAP and web sources, against real servers.

Each test starts the kind's real server (moto's S3 server, Dovecot, a bare Git repository, an HTTP
server) on 127.0.0.1, syncs a source from it and asks the API over FastAPI's TestClient. alice
(finance) may read every document; bob (staff) may read none: his 404 must be the 404 of an id that
does not exist, while alice gets the bytes that were put in.
"""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from bastion.accounts import Accounts
from bastion.catalog.models import DocumentRow
from bastion.server import create_app
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from tests.conftest import EXAMPLES
from tests.connectors._dovecot import start_dovecot
from tests.connectors._s3server import REGION, start_s3_server
from tests.connectors.test_git import Remote
from tests.connectors.test_imap import PW_ENV, Mailbox
from tests.connectors.test_web import Site

PDF = EXAMPLES / "product" / "nw5000_spec_sheet.pdf"
MISSING = "0" * 32


class Api:
    """The served workspace, with a client per user."""

    def __init__(self, ws: Workspace, client: TestClient):
        self.ws, self.client = ws, client
        accounts = Accounts(ws.catalog)
        self.keys = {user: accounts.create_key(user)[1] for user in ("alice", "bob")}

    def doc(self, key: str) -> str:
        with self.ws.catalog.session() as s:
            doc_id = s.scalar(select(DocumentRow.id).where(DocumentRow.key == key))
        assert doc_id is not None, f"no document {key!r}"
        return doc_id

    def original(self, user: str, doc_id: str, **params):
        return self.client.get(f"/api/v1/documents/{doc_id}/original", params=params,
                               headers={"Authorization": f"Bearer {self.keys[user]}"})

    def assert_hidden_from_bob(self, doc_id: str) -> None:
        """bob's answer for the document says no more than the answer for an id that does not exist."""
        denied, missing = self.original("bob", doc_id), self.original("bob", MISSING)
        assert denied.status_code == missing.status_code == 404
        assert {k: v for k, v in denied.json().items() if k not in ("instance", "request_id")} == \
               {k: v for k, v in missing.json().items() if k not in ("instance", "request_id")}


@pytest.fixture
def api(tmp_path) -> Iterator[Api]:
    Workspace.init(tmp_path / "ws")
    ws = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    with TestClient(create_app(ws)) as client:
        yield Api(ws, client)
    ws.close()


def _synced(ws: Workspace) -> None:
    [report] = ws.sync()
    assert report.status == "completed", report.to_dict()


def test_s3_object_is_streamed_to_its_reader_and_a_stopped_store_is_a_502(api, monkeypatch):
    server = start_s3_server()
    try:
        monkeypatch.setenv("BASTION_TEST_S3_KEY", server.access_key)
        monkeypatch.setenv("BASTION_TEST_S3_SECRET", server.secret_key)
        s3 = server.client()
        s3.create_bucket(Bucket="reports")
        s3.put_object(Bucket="reports", Key="q3/nw5000 spec.pdf", Body=PDF.read_bytes())
        s3.put_object(Bucket="reports", Key="q3/board.html", Body=b"<h1>Board</h1><script>alert(1)</script>",
                      ContentType="text/html")
        api.ws.sources.add_kind("bucket", "s3", {"bucket": "reports", "endpoint_url": server.url, "region": REGION,
                                                 "access_key_env": "BASTION_TEST_S3_KEY",
                                                 "secret_key_env": "BASTION_TEST_S3_SECRET"}, acl="group:finance")
        _synced(api.ws)
        pdf, html = api.doc("q3/nw5000 spec.pdf"), api.doc("q3/board.html")

        got = api.original("alice", pdf)
        assert got.status_code == 200 and got.content == PDF.read_bytes()
        assert got.headers["content-type"] == "application/pdf"
        assert got.headers["content-disposition"].startswith('inline; filename="nw5000 spec.pdf"')
        assert "x-bastion-changed-since-sync" not in got.headers
        assert api.original("alice", pdf, download="true").headers["content-disposition"].startswith("attachment;")
        page = api.original("alice", html)  # HTML never inline: it would run in the server's origin
        assert page.status_code == 200 and page.headers["content-disposition"].startswith('attachment; filename="board.html"')
        assert page.headers["x-content-type-options"] == "nosniff"
        api.assert_hidden_from_bob(pdf)

        s3.put_object(Bucket="reports", Key="q3/nw5000 spec.pdf", Body=b"%PDF-1.4 rewritten")  # not synced yet
        again = api.original("alice", pdf)
        assert again.content == b"%PDF-1.4 rewritten" and again.headers["x-bastion-changed-since-sync"] == "true"
        s3.delete_object(Bucket="reports", Key="q3/board.html")
        gone = api.original("alice", html)
        assert gone.status_code == 404 and "no longer in its source 'bucket'" in gone.json()["detail"]
    finally:
        server.stop()
    down = api.original("alice", pdf)
    assert down.status_code == 502 and "the source 'bucket' cannot give the original" in down.json()["detail"]
    assert "reports" in down.json()["detail"]  # names the bucket the reader's admin must look at
    api.assert_hidden_from_bob(pdf)  # an unreadable source reveals nothing to bob either


def test_git_file_is_the_blob_the_index_holds_and_a_lost_repository_is_a_502(api, tmp_path):
    remote = Remote(tmp_path / "git")
    remote.write("docs/guide.md", "# Guide\n\nThe kiwi release ships on Friday.\n")
    remote.commit()
    api.ws.sources.add_kind("repo", "git", {"url": remote.url}, acl="group:finance")
    _synced(api.ws)
    doc = api.doc("docs/guide.md")

    got = api.original("alice", doc)
    assert got.status_code == 200 and got.content == b"# Guide\n\nThe kiwi release ships on Friday.\n"
    assert got.headers["content-type"].startswith("text/markdown")
    assert got.headers["content-disposition"].startswith('inline; filename="guide.md"')
    api.assert_hidden_from_bob(doc)

    remote.write("docs/guide.md", "# Guide\n\nThe kiwi release slips to Monday.\n")
    remote.commit()  # not synced: the original stays the version the answers cite
    assert b"Friday" in api.original("alice", doc).content

    shutil.rmtree(api.ws.data_dir / "connectors" / "git" / "source-repo")  # no cache copy: it must fetch
    remote.bare.rename(tmp_path / "moved.git")  # ...from a repository that is gone
    down = api.original("alice", doc)
    assert down.status_code == 502 and "cannot fetch" in down.json()["detail"]
    assert str(remote.bare) in down.json()["detail"]
    api.assert_hidden_from_bob(doc)


def test_imap_message_is_an_eml_and_its_attachment_the_file_both_left_unread(api, monkeypatch):
    dovecot = start_dovecot()
    try:
        box = Mailbox(dovecot)
        box.deliver("Kiwi shipment delayed", "The kiwi shipment from Napier arrives on Friday.",
                    attachments=[("nw5000 spec.pdf", PDF.read_bytes(), "application/pdf")], message_id="<k1@example.com>")
        box.deliver("No id", "A message without a Message-ID is keyed by its UID.", message_id=None)
        monkeypatch.setenv(PW_ENV, box.password)
        api.ws.sources.add_kind("mail", "imap", {"host": "127.0.0.1", "port": dovecot.port, "security": "plain",
                                                 "username": box.login, "password_env": PW_ENV, "owner": "alice"})
        _synced(api.ws)
        message, attachment = api.doc("INBOX;MESSAGE-ID=<k1@example.com>"), api.doc("INBOX;MESSAGE-ID=<k1@example.com>/;SECTION=2")

        eml = api.original("alice", message)
        assert eml.status_code == 200 and eml.headers["content-type"] == "message/rfc822"
        assert eml.headers["content-disposition"].startswith('attachment; filename="Kiwi shipment delayed.eml"')
        parsed = message_from_bytes(eml.content, policy=default_policy)
        assert parsed["Subject"] == "Kiwi shipment delayed" and parsed["Message-ID"] == "<k1@example.com>"
        assert "arrives on Friday" in parsed.get_body(("plain",)).get_content()
        pdf = api.original("alice", attachment)
        assert pdf.status_code == 200 and pdf.content == PDF.read_bytes()
        assert pdf.headers["content-type"] == "application/pdf"
        assert 'filename="nw5000 spec.pdf"' in pdf.headers["content-disposition"]
        [by_uid] = [k for k in _keys(api.ws) if ";UID=" in k]
        assert b"keyed by its UID" in api.original("alice", api.doc(by_uid)).content
        assert all(b"\\Seen" not in flags for flags in box.flags())  # reading the original marks nothing read
        api.assert_hidden_from_bob(attachment)
        api.assert_hidden_from_bob(message)
        box.client.logout()
    finally:
        dovecot.stop()
    down = api.original("alice", message)
    assert down.status_code == 502 and f"127.0.0.1:{dovecot.port}" in down.json()["detail"]


def test_web_page_is_its_url_beside_its_text_never_a_redirect_or_a_fetch(api):
    site = Site()
    try:
        site.html("/", "Handbook", "Expenses are filed within thirty days.", links=["/travel.html"])
        site.html("/travel.html", "Travel", "Hotels are capped at EUR 180 per night.")
        api.ws.sources.add_kind("site", "web", {"url": site.url + "/", "delay": 0}, acl="group:finance")
        _synced(api.ws)
        doc = api.doc(site.url + "/travel.html")
        before = site.fetched("/travel.html")

        got = api.original("alice", doc)
        assert got.status_code == 200 and got.headers["content-type"] == "application/json"
        body = got.json()
        assert body["url"] == site.url + "/travel.html" and "capped at EUR 180" in body["text"]
        assert site.fetched("/travel.html") == before  # the server never fetches the page for a reader
        api.assert_hidden_from_bob(doc)
        # the viewer's passage names the page's address, so "Open page" goes there, not to JSON
        auth = {"Authorization": f"Bearer {api.keys['alice']}"}
        chunk = api.client.get(f"/api/v1/documents/{doc}", headers=auth).json()["passages"][0]["chunk_id"]
        passage = api.client.get(f"/api/v1/passages/{chunk}", headers=auth).json()
        assert passage["original_url"] == site.url + "/travel.html"
    finally:
        site.stop()


def _keys(ws: Workspace) -> list[str]:
    with ws.catalog.session() as s:
        return list(s.scalars(select(DocumentRow.key)))
