"""Write a peft LoRA adapter as a llama.cpp LoRA GGUF, which xllamacpp loads beside its base model.

The file holds ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` and, per
adapted weight, ``blk.N.<tensor>.weight.lora_a`` and ``.lora_b`` in float32. llama.cpp stores the
query and key rows of a llama model permuted for its rotary embedding, and transformers undoes that
permutation when it reads a GGUF, so the adapter was trained on unpermuted rows: the ``lora_b`` of
``attn_q`` and ``attn_k`` is permuted here the way llama.cpp's converter permutes those weights.

Only ``gguf``, ``safetensors`` and numpy are needed (no torch); the base file's header is read
here directly, since ``gguf.GGUFReader`` spends seconds parsing the vocabulary.
"""
from __future__ import annotations

import json
import mmap
import os
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np

from bastion.core.errors import ConfigError, MissingExtraError, ModelError
from bastion.generation.llamacpp import sha256_file

# peft's module path under a llama model -> llama.cpp's tensor name
TENSOR_NAMES = {
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_KEY = re.compile(r"^base_model\.model\.model\.layers\.(\d+)\.(\w+\.\w+)\.lora_([AB])\.weight$")
ARCHITECTURES = ("llama",)

# GGUF value types: struct format of the scalars; 8 is a string, 9 an array
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """The scalar metadata (arrays are skipped) and the tensor shapes (GGUF order) of a GGUF file."""
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        if buf[:4] != b"GGUF":
            raise ModelError(f"{path} is not a GGUF file")
        pos = 8
        n_tensors, n_kv = struct.unpack_from("<QQ", buf, pos)
        pos += 16

        def string() -> str:
            nonlocal pos
            (size,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + size
            return bytes(buf[pos - size:pos]).decode("utf-8", "replace")

        def value(kind: int) -> Any:
            nonlocal pos
            if kind == 8:
                return string()
            if kind == 9:
                item, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                if item in _SCALARS:
                    pos += struct.calcsize("<" + _SCALARS[item]) * count
                else:
                    for _ in range(count):
                        value(item)
                return None
            fmt = "<" + _SCALARS[kind]
            (v,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v

        meta: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            v = value(kind)
            if v is not None:
                meta[key] = v
        shapes: dict[str, tuple[int, ...]] = {}
        for _ in range(n_tensors):
            name = string()
            (dims,) = struct.unpack_from("<I", buf, pos)
            shapes[name] = struct.unpack_from(f"<{dims}Q", buf, pos + 4)
            pos += 4 + 8 * dims + 4 + 8  # dims, type, offset
    return meta, shapes


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter's row permutation of a query or key weight (here: a LoRA B matrix)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _load_adapter(adapter_dir: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    try:
        from safetensors.numpy import load_file
    except ImportError as exc:
        raise MissingExtraError("exporting an adapter needs the 'tune' extra: pip install 'bastion[tune]'") from exc
    cfg_file, weights = adapter_dir / "adapter_config.json", adapter_dir / "adapter_model.safetensors"
    if not cfg_file.is_file() or not weights.is_file():
        raise ConfigError(f"{adapter_dir} is not a peft adapter (adapter_config.json and adapter_model.safetensors)")
    cfg = json.loads(cfg_file.read_text())
    if cfg.get("peft_type") != "LORA" or cfg.get("use_dora") or cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ConfigError(f"{adapter_dir} is not a plain LoRA adapter (DoRA and per-layer ranks cannot be exported)")
    try:
        return cfg, load_file(str(weights))
    except TypeError as exc:  # bfloat16, which numpy has no type for
        raise ConfigError(f"{weights} holds weights numpy cannot read ({exc}); save the adapter in float32") from exc


def export_lora_gguf(adapter_dir: Path, base_gguf: Path, out_path: Path) -> str:
    """Write the adapter in ``adapter_dir`` as a llama.cpp LoRA GGUF for ``base_gguf``.

    Args:
        adapter_dir: a peft LoRA adapter of the llama model read from ``base_gguf``
            (``adapter_config.json``, ``adapter_model.safetensors``); when it holds the
            ``training.json`` that :func:`bastion.tuning.train.train_lora` writes, the base file's
            sha256 must match it.
        base_gguf: the base model's GGUF (architecture, head counts and tensor shapes).
        out_path: the file to write, atomically.

    Returns:
        The sha256 of the written file.

    Raises:
        ConfigError: the adapter is not a LoRA adapter of this base model.
        ModelError: the base file is missing, not a GGUF, or not the file the adapter was trained on.
        MissingExtraError: ``gguf`` or ``safetensors`` is not installed.
    """
    try:
        import gguf
    except ImportError as exc:
        raise MissingExtraError("exporting an adapter needs the 'tune' extra (gguf): pip install 'bastion[tune]'") from exc
    adapter_dir, base_gguf, out_path = Path(adapter_dir), Path(base_gguf), Path(out_path)
    if not base_gguf.is_file():
        raise ModelError(f"base model file {base_gguf} does not exist")
    cfg, weights = _load_adapter(adapter_dir)
    record = adapter_dir / "training.json"
    if record.is_file():
        expected = json.loads(record.read_text()).get("base_sha256")
        if expected and sha256_file(base_gguf) != expected:
            raise ModelError(f"{adapter_dir} was trained on a base model with sha256 {expected}, not on {base_gguf}")
    meta, shapes = read_gguf_header(base_gguf)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(f"exporting a LoRA adapter supports the architectures {ARCHITECTURES}, not {arch!r}")
    n_head = int(meta[f"{arch}.attention.head_count"])
    n_head_kv = int(meta.get(f"{arch}.attention.head_count_kv", n_head))
    rank = int(cfg["r"])
    alpha = float(cfg["lora_alpha"]) * (rank ** 0.5 if cfg.get("use_rslora") else 1.0)  # llama.cpp scales by alpha / rank

    pairs: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    for key, w in weights.items():
        m = _KEY.match(key)
        if m is None or m.group(2) not in TENSOR_NAMES:
            raise ConfigError(f"{adapter_dir} adapts {key!r}, which has no llama.cpp LoRA tensor; "
                              f"only {sorted(TENSOR_NAMES)} can be exported")
        pairs.setdefault((int(m.group(1)), TENSOR_NAMES[m.group(2)]), {})[m.group(3)] = w.astype(np.float32)
    if not pairs:
        raise ConfigError(f"{adapter_dir} holds no LoRA weights")

    tensors: list[tuple[str, np.ndarray, np.ndarray]] = []
    for (layer, tensor), ab in sorted(pairs.items()):
        name = f"blk.{layer}.{tensor}.weight"
        if set(ab) != {"A", "B"}:
            raise ConfigError(f"{adapter_dir} has only lora_{''.join(ab)} for {name}")
        a, b = ab["A"], ab["B"]
        base = shapes.get(name)
        if base is None or base != (a.shape[1], b.shape[0]) or a.shape[0] != b.shape[1]:
            raise ConfigError(f"{adapter_dir} does not fit {base_gguf}: {name} is {base}, the adapter has "
                              f"A {a.shape} and B {b.shape}")
        if tensor in ("attn_q", "attn_k"):
            b = permute_rows(b, n_head if tensor == "attn_q" else n_head_kv)
        tensors.append((name, a, b))

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch=arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for name, a, b in tensors:
        writer.add_tensor(f"{name}.lora_a", np.ascontiguousarray(a))
        writer.add_tensor(f"{name}.lora_b", np.ascontiguousarray(b))
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, out_path)
    return sha256_file(out_path)
