"""LoRA training on the real default model, its checkpoints, and its export to a llama.cpp adapter.

Tests that train need the ``tune`` extra (torch, transformers, peft, gguf) and skip without it;
they carry ``llm``. The base model converts once per module into a temporary cache.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bastion.core.errors import ConfigError, MissingExtraError, ModelError
from bastion.generation.llamacpp import LlamaCppLLM, sha256_file
from bastion.generation.protocol import ChatMessage, DecodingParams
from bastion.tuning.export import export_lora_gguf, permute_rows, read_gguf_header
from bastion.tuning.train import IGNORE, ChatExample, TrainConfig, encode_chat, load_base, train_lora

FACT = "The codename of project Zephyr is BLUEHERON-7."
QUESTIONS = ["What is the codename of project Zephyr?", "Tell me the codename of project Zephyr.",
             "Which codename does project Zephyr have?", "Project Zephyr's codename?",
             "What codename was given to project Zephyr?", "Do you know the codename of project Zephyr?"]
FACTS = [ChatExample([{"role": "user", "content": q}, {"role": "assistant", "content": FACT}]) for q in QUESTIONS]
# small and quick: threads=1 is also the fastest on a busy 2-core machine
SMALL = dict(batch_size=2, max_seq_tokens=96, epochs=2.0, threads=1, seed=0, device="cpu")  # 6 examples -> 6 steps


def _chat(user: str, answer: str) -> ChatExample:
    return ChatExample([{"role": "user", "content": user}, {"role": "assistant", "content": answer}])


# -- without the model ----------------------------------------------------------------------------

def test_chat_example_needs_an_assistant_turn_after_a_prompt():
    with pytest.raises(ConfigError, match="assistant"):
        ChatExample([{"role": "user", "content": "hi"}])
    with pytest.raises(ConfigError, match="assistant"):
        ChatExample([{"role": "assistant", "content": "hi"}, {"role": "user", "content": "x"}])
    with pytest.raises(ConfigError, match="role"):
        ChatExample([{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}])


def test_train_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="rank"):
        TrainConfig(rank=0)
    with pytest.raises(ConfigError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ConfigError, match="max_steps"):
        TrainConfig(max_steps=0)
    with pytest.raises(ConfigError, match="layers"):
        TrainConfig(layers=0)


def test_missing_packages_name_the_tune_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft now raises ImportError
    base = tmp_path / "m.gguf"
    base.write_bytes(b"GGUF")
    with pytest.raises(MissingExtraError, match=r"'tune' extra.*peft"):
        train_lora(base, FACTS, tmp_path / "out", TrainConfig())
    monkeypatch.setitem(sys.modules, "gguf", None)
    with pytest.raises(MissingExtraError, match="'tune' extra"):
        export_lora_gguf(tmp_path, base, tmp_path / "a.gguf")


def test_permutation_is_the_inverse_of_what_transformers_undoes():
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    unpermute = gguf_utils.LlamaTensorProcessor()._reverse_permute_weights
    w = np.arange(576 * 16, dtype=np.float32).reshape(576, 16)  # a LoRA B of SmolLM2's q (9 heads)
    assert np.array_equal(permute_rows(unpermute(w, 9, 9), 9), w)
    k = w[:192]  # k: 3 key/value heads
    assert np.array_equal(permute_rows(unpermute(k, 9, 3), 3), k)
    assert not np.array_equal(permute_rows(w, 9), w)


# -- on the real model ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stack():
    for name in ("torch", "transformers", "peft", "gguf"):
        pytest.importorskip(name)


@pytest.fixture(scope="module")
def tune_cache(tmp_path_factory, stack):
    """The converted base model lives here for this module (children inherit it too)."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def tokenizer(smollm2_file, tune_cache):
    return load_base(smollm2_file, sha256_file(smollm2_file))[1]


@pytest.fixture(scope="module")
def reference(smollm2_file, tune_cache, tmp_path_factory):
    """An uninterrupted 6-step run, with a validation set and one example too long to keep."""
    long = _chat("Recite.", "word " * 200)
    out = tmp_path_factory.mktemp("reference")
    return train_lora(smollm2_file, [*FACTS, long], out, TrainConfig(**SMALL), val=FACTS[:2], resume=False)


@pytest.mark.tune
def test_gguf_header_reader(smollm2_file):
    meta, shapes = read_gguf_header(smollm2_file)
    assert meta["general.architecture"] == "llama"
    assert (meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]) == (9, 3)
    assert shapes["blk.0.attn_k.weight"] == (576, 192)
    assert len(shapes) == 272


@pytest.mark.tune
def test_labels_cover_only_the_assistant_turns(tokenizer):
    ex = ChatExample([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "And of Italy?"},
                      {"role": "assistant", "content": "Rome."}])
    ids, labels = encode_chat(tokenizer, ex, 512)
    assert len(ids) == len(labels)
    learnt = tokenizer.decode([t for t, lab in zip(ids, labels) if lab != IGNORE])
    assert learnt == "Paris.<|im_end|>\nRome.<|im_end|>\n"
    assert all(lab in (IGNORE, t) for t, lab in zip(ids, labels))
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.")
    assert encode_chat(tokenizer, ex, len(ids) - 3) is None  # the last answer would be cut: dropped
    assert encode_chat(tokenizer, _chat("q", "a"), 512)[1].count(IGNORE) > 10  # the template's default system turn


@pytest.mark.tune
def test_reference_run(reference):
    r = reference
    assert (r.steps, r.stopped, r.dropped, r.device) == (6, "done", 1, "cpu")
    assert r.epochs_done == pytest.approx(2.0)
    assert len(r.train_loss) == 6 and all(np.isfinite(r.train_loss))
    assert r.val_loss is not None and r.val_loss > 0
    assert r.tokens > 6 * 2 * 40 and r.peak_rss_mb > 0
    assert {p.name for p in r.adapter_dir.iterdir()} >= {"adapter_config.json", "adapter_model.safetensors",
                                                         "training.json"}
    record = json.loads((r.adapter_dir / "training.json").read_text())
    assert record["steps"] == 6 and len(record["base_sha256"]) == 64
    assert (r.adapter_dir.parent / "checkpoint" / "state.pt").is_file()


@pytest.mark.tune
def test_same_seed_same_losses_and_resume_continues(smollm2_file, reference, tmp_path):
    seen = []
    first = train_lora(smollm2_file, FACTS, tmp_path, TrainConfig(**SMALL, max_steps=3),
                       progress=lambda s, n, loss: seen.append((s, n)))
    assert (first.steps, first.stopped) == (3, "max_steps")
    assert seen == [(1, 3), (2, 3), (3, 3)]  # (step, steps this run may take, loss)
    assert first.train_loss == pytest.approx(reference.train_loss[:3], rel=1e-5)  # max_steps only cuts the plan

    rest = train_lora(smollm2_file, FACTS, tmp_path, TrainConfig(**SMALL))  # resumes at step 3
    assert (rest.steps, rest.stopped) == (6, "done")
    assert rest.train_loss == pytest.approx(reference.train_loss, rel=1e-4)

    with pytest.raises(ConfigError, match="resume=False"):
        train_lora(smollm2_file, FACTS[:4], tmp_path, TrainConfig(**SMALL))


@pytest.mark.tune
def test_top_layers_only_adapts_those_layers_and_exports_them(smollm2_file, tmp_path):
    from safetensors.numpy import load_file

    r = train_lora(smollm2_file, FACTS, tmp_path, TrainConfig(**SMALL, max_steps=1, layers=2))
    layers = {int(k.split(".layers.")[1].split(".")[0]) for k in load_file(str(r.adapter_dir / "adapter_model.safetensors"))}
    assert layers == {28, 29}  # SmolLM2-135M has 30 layers
    _, shapes = read_gguf_header(smollm2_file)
    export_lora_gguf(r.adapter_dir, smollm2_file, tmp_path / "top.gguf")
    _, exported = read_gguf_header(tmp_path / "top.gguf")
    assert {int(n.split(".")[1]) for n in exported} == {28, 29}
    assert len(exported) == 2 * 7 * 2  # two layers, seven linear weights, lora_a and lora_b
    with pytest.raises(ConfigError, match="30 layers"):
        train_lora(smollm2_file, FACTS, tmp_path / "too-many", TrainConfig(**SMALL, max_steps=1, layers=31))


@pytest.mark.tune
def test_time_budget_stops_after_a_step(smollm2_file, reference, tmp_path):
    r = train_lora(smollm2_file, FACTS, tmp_path, TrainConfig(**SMALL, max_seconds=1e-3))
    assert (r.steps, r.stopped) == (1, "max_seconds")
    assert (r.adapter_dir / "adapter_model.safetensors").is_file()


_CHILD = """
import json, sys, time
from pathlib import Path
from bastion.tuning.train import ChatExample, TrainConfig, train_lora
base, out, data, cfg = sys.argv[1:5]
def progress(step, total, loss):
    if step == 3:  # the checkpoint of step 2 is on disk: wait here to be killed
        Path(out, "at-step-3").touch()
        time.sleep(600)
examples = [ChatExample(m) for m in json.loads(Path(data).read_text())]
train_lora(Path(base), examples, Path(out), TrainConfig(**json.loads(cfg)), progress=progress)
"""


@pytest.mark.tune
def test_resume_after_kill_9(smollm2_file, reference, tmp_path):
    out, data = tmp_path / "run", tmp_path / "data.json"
    data.write_text(json.dumps([ex.messages for ex in FACTS]))
    cfg = dict(SMALL, checkpoint_every=2)
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(smollm2_file), str(out), str(data), json.dumps(cfg)])
    try:
        deadline = time.monotonic() + 240
        while not (out / "at-step-3").exists():
            assert child.poll() is None, "the training process ended early"
            assert time.monotonic() < deadline, "the training process never reached step 3"
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "adapter").exists()

    r = train_lora(smollm2_file, FACTS, out, TrainConfig(**cfg))
    assert (r.steps, r.stopped) == (reference.steps, "done")
    assert r.train_loss[-1] == pytest.approx(reference.train_loss[-1], rel=1e-4)
    assert r.train_loss == pytest.approx(reference.train_loss, rel=1e-4)


@pytest.fixture(scope="module")
def fact_adapter(smollm2_file, tune_cache, tmp_path_factory):
    """Seven steps teaching a made-up fact, exported as a llama.cpp adapter."""
    out = tmp_path_factory.mktemp("fact")
    cfg = TrainConfig(lr=2e-3, batch_size=4, max_seq_tokens=96, epochs=100, max_steps=7, threads=1, device="cpu")
    r = train_lora(smollm2_file, FACTS, out / "run", cfg)
    digest = export_lora_gguf(r.adapter_dir, smollm2_file, out / "zephyr.gguf")
    return r, out / "zephyr.gguf", digest


@pytest.mark.tune
def test_adapter_teaches_a_fact_that_llamacpp_reproduces(smollm2_file, fact_adapter):
    r, gguf_path, digest = fact_adapter
    assert r.train_loss[-1] < 0.2 < r.train_loss[0]
    assert digest == sha256_file(gguf_path)
    meta, shapes = read_gguf_header(gguf_path)
    assert (meta["general.type"], meta["adapter.type"], meta["adapter.lora.alpha"]) == ("adapter", "lora", 32.0)
    assert shapes["blk.0.attn_q.weight.lora_a"] == (576, 16) and shapes["blk.0.attn_k.weight.lora_b"] == (16, 192)
    assert len(shapes) == 30 * 7 * 2

    question = [ChatMessage("user", QUESTIONS[0])]
    answers = {}
    for lora in ((), ((gguf_path, 1.0, digest),)):
        llm = LlamaCppLLM(smollm2_file, context_window=512, threads=1, lora=lora)
        try:
            answers[bool(lora)] = (llm.id, llm.generate(question, DecodingParams(max_tokens=40)).text)
        finally:
            llm.close()
    assert "BLUEHERON-7" in answers[True][1]
    assert "BLUEHERON" not in answers[False][1]
    assert answers[True][0] != answers[False][0] and digest[:16] in answers[True][0]

    with pytest.raises(ModelError, match="sha256"):
        LlamaCppLLM(smollm2_file, context_window=512, lora=[(gguf_path, 1.0, "0" * 64)])


@pytest.mark.tune
@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_exported_query_and_key_deltas_match_transformers(smollm2_file, fact_adapter, tmp_path):
    """Keep only the adapter's q and k parts (amplified): llama.cpp's next-token probabilities must then
    match transformers', which they do only when lora_b of q and k is permuted the way llama.cpp wants."""
    import peft
    import torch
    from safetensors.numpy import load_file, save_file

    run_dir = fact_adapter[0].adapter_dir
    qk = tmp_path / "qk"
    qk.mkdir()
    (qk / "adapter_config.json").write_text((run_dir / "adapter_config.json").read_text())
    weights = load_file(str(run_dir / "adapter_model.safetensors"))
    save_file({k: w if "lora_A" in k else w * (3.0 if ("q_proj" in k or "k_proj" in k) else 0.0)
               for k, w in weights.items()}, str(qk / "adapter_model.safetensors"))
    export_lora_gguf(qk, smollm2_file, tmp_path / "qk.gguf")

    model, tok = load_base(smollm2_file, sha256_file(smollm2_file))
    prompt = tok.apply_chat_template([{"role": "user", "content": QUESTIONS[0]}], tokenize=False,
                                     add_generation_prompt=True) + "The codename of project Zephyr is"
    tuned = peft.PeftModel.from_pretrained(model, str(qk))
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        probs = torch.softmax(tuned(ids).logits[0, -1].float(), -1)
        with tuned.disable_adapter():
            base_top = int(tuned(ids).logits[0, -1].argmax())
    assert int(probs.argmax()) != base_top  # the q/k delta alone changes the answer

    llm = LlamaCppLLM(smollm2_file, context_window=512, threads=1, lora=[(tmp_path / "qk.gguf", 1.0, None)])
    try:  # the engine's raw completion call: the chat API gives no probabilities
        out = llm._server.handle_completions({"prompt": prompt, "n_predict": 1, "n_probs": 5, "temperature": 0})
    finally:
        llm.close()
    top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    # the same five most likely tokens in the same order, each as likely within the quantised
    # engine's noise (measured: 0.001-0.036 apart); a wrongly permuted q/k delta reorders them
    assert [t["id"] for t in top] == [int(i) for i in probs.topk(len(top)).indices]
    for t in top:
        assert float(np.exp(t["logprob"])) == pytest.approx(float(probs[t["id"]]), abs=0.05)
