"""S3 sources end to end, against a real S3-compatible HTTP server (moto's, in a process of its own)
that checks request signatures. Every test owns a bucket; objects are written with boto3, as
any S3 client would. Nothing here is mocked.
"""
from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from bastion.connectors.s3 import S3Connector, _version_time
from bastion.core.errors import ConfigError, IngestError
from bastion.testing import HashEmbedder
from bastion.testing.connector_contract import ConnectorContract
from bastion.workspace import Workspace
from tests.conftest import EXAMPLES
from tests.connectors._s3server import REGION, S3Server, start_s3_server

KEY_ENV, SECRET_ENV = "BASTION_TEST_S3_KEY", "BASTION_TEST_S3_SECRET"
PDF = EXAMPLES / "product" / "nw5000_spec_sheet.pdf"  # page 2: "hybrid ceramic angular-contact bearings"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = start_s3_server()
    yield server
    server.stop()


class Bucket:
    """A fresh bucket on the server."""

    def __init__(self, server: S3Server):
        self.server, self.name = server, f"bastion-{uuid.uuid4().hex[:12]}"
        self.client = server.client()
        self.client.create_bucket(Bucket=self.name)

    def put(self, key: str, body: str | bytes, acl: str | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        extra = {"Metadata": {"bastion-acl": acl}} if acl is not None else {}
        self.client.put_object(Bucket=self.name, Key=key, Body=data, **extra)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.name, Key=key)


@pytest.fixture
def bucket(s3, monkeypatch) -> Bucket:
    monkeypatch.setenv(KEY_ENV, s3.access_key)
    monkeypatch.setenv(SECRET_ENV, s3.secret_key)
    return Bucket(s3)


@pytest.fixture
def ws(tmp_path) -> Iterator[Workspace]:
    Workspace.init(tmp_path / "ws")
    w = Workspace.open(tmp_path / "ws", embedder=HashEmbedder())
    w.directory.add_user("alice", groups=["finance", "staff"])
    w.directory.add_user("bob", groups=["staff"])
    w.directory.add_user("dave", groups=["board"])
    yield w
    w.close()


def options(bucket: Bucket, **extra) -> dict:
    return {"bucket": bucket.name, "endpoint_url": bucket.server.url, "region": REGION,
            "access_key_env": KEY_ENV, "secret_key_env": SECRET_ENV} | extra


def add_source(ws: Workspace, bucket: Bucket, acl: str = "group:staff", name: str = "bucket", **extra):
    return ws.sources.add_kind(name, "s3", options(bucket, **extra), acl=acl)


def sync(ws: Workspace):
    [report] = ws.sync()
    return report


def counts(report) -> dict:
    c = report.counts()
    return {k.removeprefix("documents_"): c[k] for k in ("documents_added", "documents_updated", "documents_deleted",
                                                          "documents_acl_changed", "documents_unchanged",
                                                          "documents_failed") if c[k]}


def paths(ws: Workspace, query: str, user: str) -> set[str]:
    """Keys of the objects ``user`` finds for ``query`` whose text has one of its words (so a
    document that only ranks by vector similarity does not count)."""
    words = set(query.lower().split())
    return {h.path for h in ws.search(query, ws.principal(user), 20) if words & set(re.findall(r"\w+", h.text.lower()))}


# -- listing, prefix, globs -------------------------------------------------------------------
def test_objects_under_the_prefix_are_indexed_with_their_parsers(ws, bucket):
    bucket.put("reports/travel.md", "# Travel\n\nThe hotel cap is 180 euro per night.\n")
    bucket.put("reports/Q3 résumé 報告.md", "# Q3\n\nThe hotel cap review for Q3.\n")
    bucket.put("reports/spec/nw5000.pdf", PDF.read_bytes())
    bucket.put("reports/drafts/old.md", "# Old\n\nThe hotel cap used to be 150 euro.\n")
    bucket.put("reports/logo.png", b"\x89PNG\r\n\x1a\n")  # no parser: left out
    bucket.put("reports/empty-folder/", b"")  # a folder marker
    bucket.put("elsewhere/hotel.md", "# Elsewhere\n\nAnother hotel cap outside the prefix.\n")
    add_source(ws, bucket, prefix="reports/", exclude="drafts/*")
    report = sync(ws)
    assert counts(report) == {"added": 3}, report.errors
    assert report.skipped == []
    assert paths(ws, "hotel cap euro", "bob") == {"reports/travel.md", "reports/Q3 résumé 報告.md"}
    hits = ws.search("hybrid ceramic angular-contact bearings", ws.principal("bob"), 5)
    assert any(h.path == "reports/spec/nw5000.pdf" and "bearings" in h.text for h in hits)


def test_include_names_files_no_parser_reads_and_they_are_reported(ws, bucket):
    bucket.put("a.md", "# A\n\nThe walrus memo.\n")
    bucket.put("b.bin", b"\x00\x01")
    add_source(ws, bucket, include=["*.md", "*.bin"])
    report = sync(ws)
    assert counts(report) == {"added": 1}
    assert report.skipped == [{"file": "b.bin", "reason": "unsupported file type 'bin'"}]


def test_changed_and_deleted_objects_are_followed(ws, bucket):
    bucket.put("policy.md", "# Policy\n\nThe hotel cap is 180 euro per night.\n")
    bucket.put("leave.md", "# Leave\n\nAnnual leave is 28 working days.\n")
    add_source(ws, bucket)
    assert counts(sync(ws)) == {"added": 2}

    bucket.put("policy.md", "# Policy\n\nThe hotel cap is 210 euro per night in capital cities.\n")
    report = sync(ws)
    assert counts(report) == {"updated": 1, "unchanged": 1}
    [hit] = [h for h in ws.search("hotel cap euro", ws.principal("bob"), 5) if h.path == "policy.md"]
    assert "210 euro" in hit.text and "180" not in hit.text

    bucket.delete("leave.md")
    report = sync(ws)
    assert counts(report) == {"deleted": 1, "unchanged": 1}
    assert paths(ws, "annual leave working days hotel", "bob") == {"policy.md"}


def test_the_etag_is_part_of_the_version_within_one_second():
    second = datetime(2026, 3, 1, 9, 30, 0, tzinfo=UTC)
    a, b = _version_time(second, '"etag-a"'), _version_time(second, '"etag-b"')
    assert a != b and int(a) == int(b) == int(second.timestamp())  # the second stays, the ETag tells them apart
    assert _version_time(second, '"etag-a"') == a


# -- access control ---------------------------------------------------------------------------
def test_prefix_acls_and_object_metadata_acls_decide_who_reads(ws, bucket):
    bucket.put("handbook.md", "# Handbook\n\nThe quarterly falcon review is on Monday.\n")
    bucket.put("finance/budget.md", "# Budget\n\nThe quarterly falcon budget is 4 million.\n")
    bucket.put("finance/board/minutes.md", "# Minutes\n\nThe quarterly falcon minutes of the board.\n",
               acl="group:board, user:alice")  # its own metadata wins over the prefix
    add_source(ws, bucket, acl="group:staff", prefix_acls={"finance/": "group:finance"}, acl_metadata=True)
    report = sync(ws)
    assert counts(report) == {"added": 3}, report.errors
    assert paths(ws, "quarterly falcon", "alice") == {"handbook.md", "finance/budget.md", "finance/board/minutes.md"}
    assert paths(ws, "quarterly falcon", "bob") == {"handbook.md"}  # staff only
    assert paths(ws, "quarterly falcon", "dave") == {"finance/board/minutes.md"}  # board, by the object's metadata


def test_invalid_metadata_acl_withdraws_the_object_fail_closed(ws, bucket):
    bucket.put("memo.md", "# Memo\n\nThe osprey memo for staff.\n", acl="group:staff")
    bucket.put("other.md", "# Other\n\nThe osprey handbook for staff.\n")
    add_source(ws, bucket, acl="group:staff", acl_metadata=True)
    assert counts(sync(ws)) == {"added": 2}
    assert paths(ws, "osprey", "bob") == {"memo.md", "other.md"}

    bucket.put("memo.md", "# Memo\n\nThe osprey memo for staff.\n", acl="staff, bob")  # not principals
    report = sync(ws)
    assert counts(report) == {"failed": 1, "unchanged": 1}
    [error] = report.errors
    assert error["file"] == "memo.md" and "invalid x-amz-meta-bastion-acl 'staff, bob'" in error["reason"]
    assert paths(ws, "osprey", "bob") == {"other.md"}  # withdrawn, not left readable to the old ACL
    assert paths(ws, "osprey", "alice") == {"other.md"}

    bucket.put("memo.md", "# Memo\n\nThe osprey memo for staff.\n", acl="group:staff")
    assert counts(sync(ws)) == {"added": 1, "unchanged": 1}
    assert paths(ws, "osprey", "bob") == {"memo.md", "other.md"}


def test_metadata_is_ignored_unless_acl_metadata_is_on(ws, bucket):
    bucket.put("memo.md", "# Memo\n\nThe heron memo.\n", acl="everyone")
    add_source(ws, bucket, acl="group:finance")
    sync(ws)
    assert paths(ws, "heron memo", "alice") == {"memo.md"}
    assert paths(ws, "heron memo", "bob") == set()  # "everyone" in the metadata is not trusted here


# -- bad input --------------------------------------------------------------------------------
def test_corrupt_and_oversize_objects_are_reported_and_the_rest_is_indexed(ws, bucket):
    bucket.put("good.md", "# Good\n\nThe kestrel plan is ready.\n")
    bucket.put("scan.pdf", b"%PDF-1.7 this is not really a PDF")
    bucket.put("export.csv", b"id,name\n" + b"1,widget\n" * 150_000)
    add_source(ws, bucket, max_mb=1)
    report = sync(ws)
    assert counts(report) == {"added": 1, "failed": 2}
    reasons = {e["file"]: e["reason"] for e in report.errors}
    assert "pdf" in reasons["scan.pdf"].lower()
    assert "over the 1 MiB limit (max_mb)" in reasons["export.csv"]
    assert paths(ws, "kestrel plan", "bob") == {"good.md"}


def test_wrong_credentials_fail_clearly_and_remove_nothing(ws, bucket, monkeypatch):
    bucket.put("plan.md", "# Plan\n\nThe kestrel plan is ready.\n")
    add_source(ws, bucket)
    assert counts(sync(ws)) == {"added": 1}

    monkeypatch.setenv(KEY_ENV, "AKIAWRONGWRONGWRONG1")
    with pytest.raises(IngestError, match=r"cannot be listed: InvalidAccessKeyId: .*check the credentials"):
        ws.sync()
    monkeypatch.setenv(KEY_ENV, bucket.server.access_key)
    monkeypatch.setenv(SECRET_ENV, "not-the-secret")
    with pytest.raises(IngestError, match=r"SignatureDoesNotMatch"):
        ws.sync()
    monkeypatch.delenv(SECRET_ENV)
    with pytest.raises(IngestError, match=rf"variable '{SECRET_ENV}' is not set"):
        ws.sync()
    assert paths(ws, "kestrel plan", "bob") == {"plan.md"}  # still searchable


def test_missing_bucket_or_unreachable_endpoint_fails_clearly(ws, bucket):
    bucket.put("plan.md", "# Plan\n\nThe kestrel plan is ready.\n")
    ws.sources.add_kind("gone", "s3", options(bucket) | {"bucket": "no-such-bucket-here"}, acl="everyone")
    with pytest.raises(IngestError, match=r"'no-such-bucket-here' .* NoSuchBucket"):
        ws.sync("gone")
    ws.sources.add_kind("down", "s3", options(bucket, endpoint_url="http://127.0.0.1:1", timeout=2), acl="everyone")
    with pytest.raises(IngestError, match=r"at http://127.0.0.1:1 cannot be listed: Could not connect"):
        ws.sync("down")


@pytest.mark.parametrize(("extra", "message"), [
    ({"secret_key": "abc"}, "never stores credentials"),
    ({"aws_access_key_id": "AKIA"}, "never stores credentials"),
    ({"secret_key_env": None}, "give both access_key_env and secret_key_env"),
    ({"profile": "dev"}, "either profile or access_key_env"),
    ({"bucket": "a/b"}, "bucket: String should match pattern"),
    ({"endpoint_url": "127.0.0.1:9000"}, "endpoint_url: String should match pattern '^https?://'"),
    ({"prefix_acls": {"finance/": "finance team"}}, "prefix_acls['finance/']: invalid principal 'finance team'"),
    ({"prefix_acls": "finance/=group:finance"}, "prefix_acls: Input should be a valid dictionary"),
    ({"max_mb": 0}, "max_mb: Input should be greater than 0"),
    ({"acl_metadata": "maybe"}, "acl_metadata: Input should be a valid boolean"),
    ({"folder": "x"}, "folder: unknown option (known: access_key_env, acl_metadata, bucket"),
    ({"timeout": "soon"}, "timeout: Input should be a valid number"),
])
def test_invalid_options_are_refused_before_anything_is_stored(ws, bucket, extra, message):
    with pytest.raises(ConfigError) as err:
        ws.sources.add_kind("bucket", "s3", options(bucket) | extra)
    assert message in str(err.value)
    assert ws.sources.list() == []


def test_without_the_s3_extra_the_source_is_refused_naming_it(ws, bucket, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # as if boto3 were not installed
    with pytest.raises(ConfigError, match=r"pip install 'bastion\[s3\]'"):
        ws.sources.add_kind("bucket", "s3", options(bucket))
    assert ws.sources.list() == []


def test_prefix_acl_lookup_prefers_the_longest_prefix():
    conn = S3Connector(bucket="b", default_acl=frozenset({"group:staff"}),
                       prefix_acls={"hr/": "group:hr", "hr/pay/": "user:carol"})
    assert conn.acl_for("hr/pay/2026.csv") == {"user:carol"}
    assert conn.acl_for("hr/leave.md") == {"group:hr"}
    assert conn.acl_for("handbook.md") == {"group:staff"}


# -- CLI --------------------------------------------------------------------------------------
def test_cli_adds_and_syncs_an_s3_source(tmp_path, bucket, monkeypatch):
    import bastion.cli.app as cli

    home = tmp_path / "ws"
    Workspace.init(home)
    w = Workspace.open(home, embedder=HashEmbedder())
    w.directory.add_user("alice", groups=["finance"])
    w.close()
    monkeypatch.setattr(cli, "_ws", lambda: Workspace.open(home, embedder=HashEmbedder()))
    bucket.put("finance/q3.md", "# Q3\n\nThe gannet revenue rose.\n")
    run = CliRunner().invoke
    r = run(cli.app, ["--home", str(home), "source", "add", "bucket", "--kind", "s3", "--acl", "group:staff",
                      "-o", f"bucket={bucket.name}", "-o", f"endpoint_url={bucket.server.url}", "-o", f"region={REGION}",
                      "-o", f"access_key_env={KEY_ENV}", "-o", f"secret_key_env={SECRET_ENV}",
                      "-o", 'prefix_acls={"finance/": "group:finance"}'])
    assert r.exit_code == 0, r.output
    r = run(cli.app, ["--home", str(home), "sync", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["documents_added"] == 1
    stored = Workspace.open(home, embedder=HashEmbedder())
    try:
        assert paths(stored, "gannet revenue", "alice") == {"finance/q3.md"}
        assert bucket.server.secret_key not in json.dumps(stored.sources.get("bucket").config)
    finally:
        stored.close()


# -- the connector contract -------------------------------------------------------------------
class TestS3Contract(ConnectorContract):
    per_document_acl = True  # x-amz-meta-bastion-acl, with acl_metadata=true

    @pytest.fixture
    def backend(self, s3) -> Iterator[Bucket]:
        # a patch of its own: the suite's monkeypatch.undo() must not unset the credentials
        with pytest.MonkeyPatch.context() as env:
            env.setenv(KEY_ENV, s3.access_key)
            env.setenv(SECRET_ENV, s3.secret_key)
            yield Bucket(s3)

    def add_source(self, ws, name, backend, acl):
        ws.sources.add_kind(name, "s3", options(backend, acl_metadata=True), acl=acl)

    def put_document(self, backend, name, text, *, acl=None):
        backend.put(f"{name}.md", text, acl=acl)

    def delete_document(self, backend, name):
        backend.delete(f"{name}.md")

    def break_document(self, backend, name):
        backend.put(f"{name}.pdf", b"%PDF-1.7 not a PDF at all")

    def make_unreachable(self, backend):
        for obj in backend.client.list_objects_v2(Bucket=backend.name).get("Contents", []):
            backend.delete(obj["Key"])
        backend.client.delete_bucket(Bucket=backend.name)  # the bucket is gone: NoSuchBucket
