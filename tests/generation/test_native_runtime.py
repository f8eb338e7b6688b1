"""The native llama.cpp runtime: which build answers, the CPU-fingerprint rule, verification against
the stock wheel, the CLI, and the prompt-prefix cache.

CI never compiles: the "native build" here is the stock wheel's own files packed as a wheel and
installed through the same cache layout, so selection, loading a second copy beside the imported
``xllamacpp``, and verification all run for real on the default model. One test really compiles;
it runs only with ``BASTION_TEST_NATIVE_BUILD=1`` (tens of minutes on 2 cores).
"""
from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

import bastion.cli.app as cli
from bastion.core.errors import ConfigError
from bastion.generation.llamacpp import LlamaCppLLM
from bastion.generation.native_build import install_wheel, kernels_of, verify_runtime
from bastion.generation.native_runtime import (
    XLLAMACPP_VERSION,
    NativeRuntime,
    cpu_fingerprint,
    runtime_dir,
    select_runtime,
)
from bastion.generation.protocol import ChatMessage, DecodingParams

pytestmark = pytest.mark.llm

HERE_FP = cpu_fingerprint()
SYSTEM = ("You are the assistant of the finance team. Answer only from the sources, in one sentence, and end it "
          "with the source number in brackets. " * 6)


def _stock_wheel(dest: Path, *, patch: str = "") -> Path:
    """The installed xllamacpp package packed as a wheel (``patch`` is appended to its ``__init__``)."""
    import xllamacpp

    pkg = Path(xllamacpp.__file__).parent
    whl = dest / f"xllamacpp-{XLLAMACPP_VERSION}-cp310-abi3-linux_x86_64.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for f in pkg.iterdir():
            if f.is_file():
                text = f.read_bytes() + (patch.encode() if f.name == "__init__.py" else b"")
                zf.writestr(f"xllamacpp/{f.name}", text)
    return whl


def _install(root: Path, *, fingerprint: str = HERE_FP, patch: str = "", name: str = "w") -> NativeRuntime:
    (root.parent / name).mkdir(exist_ok=True)
    target = runtime_dir(root, XLLAMACPP_VERSION, fingerprint)
    install_wheel(_stock_wheel(root.parent / name, patch=patch), target, fingerprint=fingerprint, cmake_args=[])
    rt = NativeRuntime.read(target)
    assert rt is not None
    return rt


def _mark_verified(rt: NativeRuntime, ok: bool = True) -> None:
    rt.manifest["verification"] = {"ok": ok, "problem": None if ok else "differs after 0 tokens"}
    rt.save()


# ---- selection: fast, nothing loaded -------------------------------------------------------------

def test_a_verified_build_for_this_cpu_is_chosen_and_one_for_another_cpu_is_ignored(tmp_path, caplog):
    root = tmp_path / "rt"
    assert select_runtime("auto", root=root, in_process=False).kind == "stock"  # nothing built: the stock wheel
    other = _install(root, fingerprint="0123456789abcdef")
    _mark_verified(other)
    with caplog.at_level(logging.INFO, logger="bastion.llm.runtime"):
        choice = select_runtime("auto", root=root, in_process=False)
    assert choice.kind == "stock" and "built for another CPU" in choice.reason
    assert any("another CPU" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="another CPU"):
        select_runtime("native", root=root, in_process=False)
    mine = _install(root)  # positive control: the same files, fingerprinted for this CPU
    assert select_runtime("auto", root=root, in_process=False).kind == "stock"  # not verified yet
    _mark_verified(mine)
    choice = select_runtime("auto", root=root, in_process=False)
    assert choice.kind == "native" and choice.runtime is not None and choice.runtime.path == mine.path
    assert select_runtime("native", root=root, in_process=False).kind == "native"
    assert select_runtime("stock", root=root, in_process=False).kind == "stock"
    _mark_verified(mine, ok=False)
    assert select_runtime("auto", root=root, in_process=False).kind == "stock"
    with pytest.raises(ConfigError, match="not one of"):
        select_runtime("fast", root=root, in_process=False)


def test_a_build_of_another_xllamacpp_version_or_with_missing_files_is_ignored(tmp_path):
    root = tmp_path / "rt"
    rt = _install(root)
    _mark_verified(rt)
    assert select_runtime("auto", root=root, version="1999.1", in_process=False).kind == "stock"
    (rt.path / "site" / "xllamacpp" / "__init__.py").unlink()
    assert "files are missing" in select_runtime("auto", root=root, in_process=False).reason


# ---- real model ----------------------------------------------------------------------------------

ASK = """
import json, sys
from bastion.generation.llamacpp import LlamaCppLLM
from bastion.generation.protocol import ChatMessage, DecodingParams
llm = LlamaCppLLM(sys.argv[1], threads=1)
g = llm.generate([ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is the capital of France?")],
                 DecodingParams(max_tokens=20))
print(json.dumps({"kind": llm.runtime.kind, "text": g.text}))
"""


def test_a_verified_build_answers_in_a_fresh_process_but_never_beside_the_loaded_stock_wheel(
        tmp_path, smollm2_file, monkeypatch):
    import subprocess
    import sys

    import xllamacpp  # noqa: F401 - this process runs the stock wheel, whatever ran before

    rt = _install(tmp_path / "rt")
    assert "AVX2" in kernels_of(rt)  # read in a child process
    verdict = verify_runtime(rt, smollm2_file, threads=1)  # each runtime in a child process of its own
    assert verdict["ok"] and all(c["identical"] for c in verdict["cases"])
    assert NativeRuntime.read(rt.path).verified  # recorded for later processes
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(tmp_path / "rt"))
    child = subprocess.run([sys.executable, "-c", ASK, str(smollm2_file)], capture_output=True, text=True,
                           timeout=600, check=True)
    native = json.loads(child.stdout.strip().splitlines()[-1])
    stock = LlamaCppLLM(smollm2_file, threads=1)  # this process: the stock wheel is loaded, so it stays
    try:
        assert native["kind"] == "native" and stock.runtime.kind == "stock"
        assert "already loaded" in stock.runtime.reason
        g = stock.generate([ChatMessage("system", "Answer briefly."), ChatMessage("user", "What is the capital of France?")],
                           DecodingParams(max_tokens=20))
        assert native["text"] and native["text"] == g.text
    finally:
        stock.close()
    with pytest.raises(ConfigError, match="one llama.cpp copy"):
        select_runtime("native", root=tmp_path / "rt")


# a "build" whose engine computes something else: every question is answered in French
FRENCH = """
_Server = Server
class Server(_Server):
    def handle_chat_completions(self, req, *args):
        req = dict(req, messages=[*req["messages"][:-1], {"role": "user",
                   "content": "Reply in French. " + req["messages"][-1]["content"]}])
        return super().handle_chat_completions(req, *args)
"""


def test_a_build_whose_answers_differ_is_refused(tmp_path, smollm2_file, monkeypatch):
    rt = _install(tmp_path / "rt", patch=FRENCH)
    verdict = verify_runtime(rt, smollm2_file, threads=1)
    assert not verdict["ok"] and "differs from the stock wheel" in verdict["problem"]
    assert not any(c["identical"] for c in verdict["cases"])
    assert select_runtime("auto", root=tmp_path / "rt", in_process=False).kind == "stock"
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(tmp_path / "rt"))
    r = CliRunner().invoke(cli.app, ["model", "runtime", "status", "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["in_use"] == "stock" and rep["runtimes"][0]["usable"] is False
    assert "differs from the stock wheel" in rep["runtimes"][0]["reason"]


def test_cli_status_and_doctor_show_the_native_build_and_remove_drops_it(tmp_path, smollm2_file, monkeypatch):
    root = tmp_path / "rt"
    mine = _install(root)
    mine.manifest["kernels"] = kernels_of(mine)  # as build_runtime records them (in a child process)
    mine.save()
    verify_runtime(mine, smollm2_file, threads=1)
    stale = _install(root, fingerprint="fedcba9876543210", name="w2")
    _mark_verified(stale)
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_HOME", raising=False)
    runner = CliRunner()
    rep = json.loads(runner.invoke(cli.app, ["model", "runtime", "status", "--json"]).output)
    assert rep["in_use"] == "native" and rep["cpu_fingerprint"] == HERE_FP
    rows = {r["cpu_fingerprint"]: r for r in rep["runtimes"]}
    assert rows[HERE_FP]["usable"] and not rows["fedcba9876543210"]["usable"]
    assert "another CPU" in rows["fedcba9876543210"]["reason"]
    doc = runner.invoke(cli.app, ["doctor", "--json"])
    assert doc.exit_code == 0, doc.output
    llm = json.loads(doc.output)["llm_runtime"]
    assert llm["in_use"] == "native" and llm["native"]["path"] == str(mine.path) and llm["native"]["kernels"]
    human = runner.invoke(cli.app, ["doctor"], env={"COLUMNS": "200"})
    assert "native build for this CPU" in human.output
    out = runner.invoke(cli.app, ["model", "runtime", "remove"])
    assert out.exit_code == 0 and str(mine.path) in out.output.replace("\n", "") and not mine.path.exists()
    assert stale.path.exists()  # only this CPU's build is removed without --all
    rep = json.loads(runner.invoke(cli.app, ["model", "runtime", "status", "--json"]).output)
    assert rep["in_use"] == "stock"
    human = runner.invoke(cli.app, ["doctor"], env={"COLUMNS": "200"})
    assert "a native build would add" in human.output


def test_prompt_cache_skips_the_shared_system_prompt_and_answers_reproducibly(smollm2_file):
    """The second question reuses the first one's KV cache for the shared system prompt, and its
    answer is the uncached answer token for token: the fixed part is evaluated in the same batches
    whether it is cached or not."""
    questions = ["Who signs invoices above 5,000 euros?", "How fast are travel expenses refunded?"]
    msgs = [[ChatMessage("system", SYSTEM), ChatMessage("user", q)] for q in questions]
    plain_llm = LlamaCppLLM(smollm2_file, runtime="stock", threads=1, context_window=2048)
    cached = [LlamaCppLLM(smollm2_file, runtime="stock", threads=1, context_window=2048, prompt_cache=True)
              for _ in range(2)]
    try:
        first = [llm.generate(msgs[0], DecodingParams(max_tokens=24)) for llm in (plain_llm, *cached)]
        assert first[0].text and len({g.text for g in first}) == 1  # a cold cache: the same answer
        full = plain_llm.generate(msgs[1], DecodingParams(max_tokens=24))
        uncached_timings = plain_llm.last_timings
        second = [llm.generate(msgs[1], DecodingParams(max_tokens=24)) for llm in cached]
        assert second[0].text and second[0].text == second[1].text  # same history, same answer
        assert second[0].text == full.text  # cached = uncached
        assert full.prompt_tokens == second[0].prompt_tokens
        assert uncached_timings["prompt_n"] == full.prompt_tokens and uncached_timings.get("cache_n", 0) == 0
        t = cached[0].last_timings
        assert t["cache_n"] > 100 and t["prompt_n"] < uncached_timings["prompt_n"] / 3
        assert t["cache_n"] + t["prompt_n"] == full.prompt_tokens
    finally:
        for llm in (plain_llm, *cached):
            llm.close()


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("BASTION_TEST_NATIVE_BUILD") != "1",
                    reason="compiles llama.cpp (tens of minutes): set BASTION_TEST_NATIVE_BUILD=1")
def test_a_real_native_build_compiles_verifies_and_is_used(tmp_path, smollm2_file, monkeypatch):
    from bastion.generation.native_build import build_runtime

    sdist = os.environ.get("BASTION_TEST_NATIVE_SDIST")
    rt = build_runtime(root=tmp_path / "rt", sdist=Path(sdist) if sdist else None)
    assert "AVX2" in rt.kernels
    assert verify_runtime(rt, smollm2_file)["ok"]
    monkeypatch.setenv("BASTION_LLM_RUNTIME_DIR", str(tmp_path / "rt"))
    llm = LlamaCppLLM(smollm2_file)
    try:
        assert llm.runtime.kind == "native"
        assert llm.generate([ChatMessage("user", "Say hello.")], DecodingParams(max_tokens=8)).text
    finally:
        llm.close()
