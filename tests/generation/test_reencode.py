"""``[llm] weights = "q8_0"``: a verified Q8_0 copy of a model's Q4/Q5 weights, made beside it.

The source is a Q4_0 model made from the default pack (its Q4_1 values quantized to Q4_0 with
gguf-py), registered as the user's own file: Q4_0 values are multiples of the block scale, so the
Q8_0 copy holds them exactly and passes verification on every CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.core.errors import ModelError
from bastion.generation import reencode
from bastion.generation.protocol import ChatMessage, DecodingParams
from bastion.generation.reencode import (
    MAX_MEAN_KL,
    MIN_SAME_TOP,
    RULE_VERSION,
    check_convertible,
    derive,
    derived_path,
    prepare,
    read_manifest,
    source_types,
    weights_status,
)
from bastion.testing import HashEmbedder
from bastion.workspace import Workspace

pytestmark = pytest.mark.llm


def _requantize(src: Path, dst: Path, qtype: str) -> Path:
    """``src`` with its Q4_1 tensors quantized to ``qtype`` (a user's own model of another type)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, quants

    r = GGUFReader(src)
    w = GGUFWriter(dst, r.fields["general.architecture"].contents())
    for name, f in r.fields.items():
        if not name.startswith("GGUF.") and name != "general.architecture":
            w.add_key_value(name, f.contents(), f.types[0], sub_type=f.types[-1] if f.types[0] == GGUFValueType.ARRAY else None)
    for t in r.tensors:
        if t.tensor_type == Q.Q4_1:
            w.add_tensor(t.name, quants.quantize(quants.dequantize(t.data, Q.Q4_1), Q[qtype]), raw_dtype=Q[qtype])
        else:
            w.add_tensor(t.name, np.asarray(t.data), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


@pytest.fixture(scope="module")
def q4_0_ws(smollm2_file, tmp_path_factory) -> tuple[Path, Path]:
    """(workspace home, the user's Q4_0 file) with model "mine" registered and llm.weights = "q8_0"."""
    root = tmp_path_factory.mktemp("reencode")
    (root / "own").mkdir()
    model = _requantize(smollm2_file, root / "own" / "mine.gguf", "Q4_0")
    home = root / "ws"
    Workspace.init(home)
    Workspace.open(home, embedder=HashEmbedder()).models.add_file("mine", model)
    toml = home / "bastion.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('model = "smollm2-135m"', 'model = "mine"\nweights = "q8_0"'),
                    encoding="utf-8")
    return home, model


def test_q8_0_weights_are_derived_verified_and_answer(q4_0_ws):
    home, model = q4_0_ws
    ws = Workspace.open(home, embedder=HashEmbedder())
    assert ws.config.llm.weights == "q8_0" and not derived_path(model).exists()
    assert "not derived yet" in weights_status(model, "q8_0")["text"]
    llm = ws.llm  # derives, verifies against the user's file, then loads the copy
    try:
        man = read_manifest(model)
        assert man is not None and man["verification"]["ok"], man
        assert man["source"]["sha256"] == ws.models.get("mine").sha256 and man["source"]["types"]["Q4_0"] == 210
        assert source_types(derived_path(model)) == {"Q8_0": 211, "F32": 61}
        assert man["derived"]["sha256"][:16] in llm.id  # answers are traced to the weights that made them
        g = llm.generate([ChatMessage("user", "Why is the sky blue?")], DecodingParams(max_tokens=16, temperature=0.0))
        assert g.text.strip()
    finally:
        llm.close()  # type: ignore[attr-defined]
    assert weights_status(model, "q8_0")["text"].startswith("q8_0: verified copy mine.q8_0.gguf")


def test_a_damaged_copy_is_derived_again_and_an_intact_one_reused(q4_0_ws):
    _home, model = q4_0_ws
    copy = derived_path(model)
    before = read_manifest(model)
    assert before is not None
    stamp = copy.stat().st_mtime_ns
    assert derive(model, before["source"]["sha256"])["status"] == "reused"  # positive control
    assert copy.stat().st_mtime_ns == stamp
    with open(copy, "r+b") as fh:  # flip bytes in the middle of the weights
        fh.seek(copy.stat().st_size // 2)
        fh.write(b"\xff" * 64)
    again = derive(model, before["source"]["sha256"])
    assert again["status"] == "derived" and again["derived"]["sha256"] == before["derived"]["sha256"]
    assert again["verification"] == before["verification"]  # the same bytes as verified: not verified twice
    # a source that no longer matches its pinned sha256 is never re-encoded
    with pytest.raises(ModelError, match="sha256"):
        derive(model, "0" * 64, force=True)


def test_unsupported_source_types_are_refused_by_name(tmp_path, smollm2_file):
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFWriter

    f16 = tmp_path / "f16.gguf"
    w = GGUFWriter(f16, "llama")
    w.add_tensor("blk.0.ffn_up.weight", np.ones((4, 64), dtype=np.float16), raw_dtype=Q.F16)
    w.add_tensor("output_norm.weight", np.ones(64, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelError, match=r"holds F16 tensors; only Q4_0/Q4_1/Q5_0/Q5_1"):
        derive(f16, None)
    assert not derived_path(f16).exists()
    with pytest.raises(ModelError, match="cannot re-encode to 'f16'"):
        check_convertible(smollm2_file, "f16")
    assert check_convertible(smollm2_file)["Q4_1"] == 210  # positive control: the shipped pack is convertible


def test_cli_reencode_human_and_json(q4_0_ws, monkeypatch):
    home, model = q4_0_ws
    monkeypatch.setenv("BASTION_HOME", str(home))
    runner = CliRunner()
    r = runner.invoke(cli.app, ["model", "reencode", "--to", "q8_0", "--no-measure", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["model"] == "mine" and rep["status"] == "reused" and rep["in_use"] is True
    v = rep["verification"]
    assert rep["path"] == str(derived_path(model)) and v["ok"] and v["rule_version"] == RULE_VERSION
    assert v["positions"] >= 200 and v["mean_kl"] <= MAX_MEAN_KL and v["same_top"] >= MIN_SAME_TOP
    assert len(v["cases"]) == 8 and v["greedy"]["answers"] == 3
    human = runner.invoke(cli.app, ["model", "reencode", "mine", "--no-measure"], env={"COLUMNS": "200"})
    assert human.exit_code == 0, human.output
    assert "Q8_0 weights reused at" in human.output and ": verified" in human.output
    assert "next-token distributions on" in human.output and "greedy answers identical" in human.output
    bad = runner.invoke(cli.app, ["model", "reencode", "mine", "--to", "f16", "--no-measure"])
    assert bad.exit_code != 0 and "cannot re-encode to 'f16'" in bad.output
    doc = json.loads(runner.invoke(cli.app, ["doctor", "--json"]).output)
    mine = next(m for m in doc["workspace"]["models"]["models"] if m["name"] == "mine")
    assert mine["weights"]["weights"] == "q8_0" and "verified copy" in mine["status"]


def test_a_copy_that_predicts_differently_is_refused(tmp_path, smollm2_file, monkeypatch):
    """A coarse copy (the default pack's Q4_1 values put through Q4_0, then written as Q8_0) fails the
    quality rule by name; the exact copy of the Q4_0 model above passes it (positive control)."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    source = tmp_path / "pack.gguf"
    source.write_bytes(smollm2_file.read_bytes())

    def through_q4_0(raw, qtype):
        values = quants.dequantize(quants.quantize(quants.dequantize(raw, Q[qtype]), Q.Q4_0), Q.Q4_0)
        return quants.quantize(values, Q.Q8_0)

    monkeypatch.setattr(reencode, "_to_q8_0", through_q4_0)
    with pytest.raises(ModelError, match=r"failed verification: its next-token distributions differ .* nats per token"):
        prepare(source, None)
    man = read_manifest(source)
    assert man is not None
    v = man["verification"]
    assert not v["ok"] and v["mean_kl"] > 5 * MAX_MEAN_KL and v["same_top"] < MIN_SAME_TOP
    assert v["runtime_kl"] < MAX_MEAN_KL  # the scale: llama.cpp's own variation stays far below the limit
    status = weights_status(source, "q8_0")
    assert status["problem"] and "refused" in status["text"] and "most likely next token" in status["text"]
    # a verdict of an older rule is not trusted: the copy counts as not yet judged
    man["verification"]["rule_version"] = RULE_VERSION - 1
    reencode._write_manifest(source, "q8_0", man)
    assert weights_status(source, "q8_0")["problem"] is None


def test_bf16_weights_are_derived_judged_and_answer(q4_0_ws, monkeypatch):
    home, model = q4_0_ws
    monkeypatch.setenv("BASTION_HOME", str(home))
    r = CliRunner().invoke(cli.app, ["model", "reencode", "mine", "--to", "bf16", "--no-measure", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["path"] == str(derived_path(model, "bf16")) and rep["status"] == "derived" and rep["in_use"] is False
    v = rep["verification"]
    assert v["ok"] and v["mean_kl"] <= MAX_MEAN_KL and v["same_top"] >= MIN_SAME_TOP
    assert source_types(derived_path(model, "bf16")) == {"BF16": 210, "Q8_0": 1, "F32": 61}
    assert derived_path(model).exists()  # the Q8_0 copy made earlier is left as it is
    toml = home / "bastion.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('weights = "q8_0"', 'weights = "bf16"'), encoding="utf-8")
    try:
        ws = Workspace.open(home, embedder=HashEmbedder())
        llm = ws.llm
        try:
            assert rep["derived"]["sha256"][:16] in llm.id
            g = llm.generate([ChatMessage("user", "Why is the sky blue?")], DecodingParams(max_tokens=16, temperature=0.0))
            assert g.text.strip()
        finally:
            llm.close()  # type: ignore[attr-defined]
        assert weights_status(model, "bf16")["text"].startswith("bf16: verified copy mine.bf16.gguf")
    finally:
        toml.write_text(toml.read_text(encoding="utf-8").replace('weights = "bf16"', 'weights = "q8_0"'), encoding="utf-8")
