"""Re-encoded weights (``[llm] weights = "q8_0"``): the same model, in a type llama.cpp computes faster.

The stock ``xllamacpp`` wheel evaluates prompts through llamafile's batched tinyBLAS kernels for
Q8_0, F16 and F32 weights, but multiplies Q4_0 / Q4_1 / Q5_0 / Q5_1 weights row by row. The values
of those types are exactly representable as floats, and Q8_0 (8-bit, one scale per 32 values)
represents them closely: each tensor is dequantized exactly and quantized again to Q8_0. A Q4_0 or
Q5_0 block's values are multiples of its scale d, so with the Q8_0 scale d/8 (Q4_0) or d/4 (Q5_0)
they are represented exactly; Q4_1 / Q5_1 blocks carry an offset as well and are quantized as
gguf-py does (scale = largest magnitude / 127), an error of about 1/17 of a 4-bit step. Tensors of other types (the F32
norms, an embedding already in Q8_0) are copied unchanged. Types Q8_0 cannot represent closely
(K-quants, I-quants, F16, BF16) are refused.

The derived file is made once from the verified source (its pinned sha256), written atomically beside
it (so it lives where the source lives, with the source's file mode), with a manifest
``<stem>.q8_0.json`` holding the source and derived sha256, the converter version and the
verification verdict. It is used only after :func:`verify_weights` compared greedy answers of both
files on the stock runtime with the rule of :func:`bastion.generation.native_build.verify_runtime`;
a damaged or missing derived file is made again, never downloaded.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.core.errors import ModelError
from bastion.generation.llamacpp import sha256_file, verify_model_file

if TYPE_CHECKING:
    from bastion.generation.models import ModelInfo

CONVERTER_VERSION = 1  # bump when the conversion changes what it writes
TARGETS = ("q8_0",)
SOURCE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")  # Q8_0 represents their values closely
KEPT_TYPES = ("F32", "Q8_0")  # copied unchanged
Progress = Callable[[str], None]


def converter_version() -> str:
    return f"bastion-reencode/{CONVERTER_VERSION} gguf-py/{version('gguf')}"


def derived_path(source: Path, target: str = "q8_0") -> Path:
    """Where the re-encoded copy of ``source`` lives: beside it."""
    return source.with_name(f"{source.stem}.{target}.gguf")


def manifest_path(source: Path, target: str = "q8_0") -> Path:
    return source.with_name(f"{source.stem}.{target}.json")


def read_manifest(source: Path, target: str = "q8_0") -> dict[str, Any] | None:
    try:
        man = json.loads(manifest_path(source, target).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return man if isinstance(man, dict) and isinstance(man.get("derived"), dict) else None


def _write_manifest(source: Path, target: str, man: dict[str, Any]) -> None:
    path = manifest_path(source, target)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(man, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _reader(source: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(source)
    except (ValueError, OSError) as exc:
        raise ModelError(f"{source} is not a readable GGUF file: {exc}") from exc


def source_types(source: Path, reader: Any = None) -> dict[str, int]:
    """Tensor count per GGML type of a GGUF file."""
    counts: dict[str, int] = {}
    for t in (reader or _reader(source)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def check_convertible(source: Path, target: str = "q8_0", reader: Any = None) -> dict[str, int]:
    """The source's tensor types, or a ModelError naming the type that cannot be re-encoded."""
    if target not in TARGETS:
        raise ModelError(f"cannot re-encode to {target!r}; supported: {', '.join(TARGETS)}")
    counts = source_types(source, reader)
    bad = sorted(t for t in counts if t not in SOURCE_TYPES + KEPT_TYPES)
    if bad:
        raise ModelError(f"{source.name} holds {', '.join(bad)} tensors; only {'/'.join(SOURCE_TYPES)} weights are "
                         f"re-encoded to {target.upper()} (its values represent theirs closely). Keep "
                         "llm.weights = \"shipped\" for this model")
    if not any(t in SOURCE_TYPES for t in counts):
        raise ModelError(f"{source.name} holds no {'/'.join(SOURCE_TYPES)} tensors (types: {', '.join(sorted(counts))}); "
                         "there is nothing to re-encode: keep llm.weights = \"shipped\"")
    return counts


def convert(source: Path, dest: Path, target: str = "q8_0", *, source_sha256: str = "") -> dict[str, Any]:
    """Write ``source`` with its Q4/Q5 tensors re-encoded as ``target`` to ``dest``; one tensor in memory at a time.

    Returns how many tensors were converted and kept, and the source's tensor types.
    """
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType, GGUFWriter, LlamaFileType

    if target not in TARGETS:
        raise ModelError(f"cannot re-encode to {target!r}; supported: {', '.join(TARGETS)}")
    reader = _reader(source)  # parsing the metadata is most of the time a conversion takes: once
    counts = check_convertible(source, target, reader)
    arch = reader.fields["general.architecture"].contents()
    writer = GGUFWriter(dest, arch)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        if name == "general.alignment":
            writer.add_custom_alignment(int(field.contents()))
            continue
        sub = field.types[-1] if field.types[0] == GGUFValueType.ARRAY else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub)
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0)
    writer.add_string("bastion.reencode.source_sha256", source_sha256)
    writer.add_string("bastion.reencode.converter", converter_version())
    plan = []
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order
        convert_it = t.tensor_type.name in SOURCE_TYPES
        qtype = Q.Q8_0 if convert_it else t.tensor_type
        nbytes = int(t.n_elements) // 32 * 34 if convert_it else int(t.data.nbytes)
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        plan.append((t, convert_it))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    done = {"converted": 0, "kept": 0}
    for t, convert_it in plan:
        if convert_it:
            writer.write_tensor_data(_to_q8_0(np.asarray(t.data), t.tensor_type.name))
        else:
            writer.write_tensor_data(np.asarray(t.data))
        done["converted" if convert_it else "kept"] += 1
    assert writer.fout is not None
    for fh in writer.fout:
        fh.flush()
        os.fsync(fh.fileno())
    writer.close()
    return {**done, "types": counts}


_EXACT_DIVISOR = {"Q4_0": 8, "Q5_0": 4}  # Q8_0 scale d/n holds every value d*(q - 8) / d*(q - 16)


def _to_q8_0(raw: Any, qtype: str) -> Any:
    """Q8_0 blocks of a Q4/Q5 tensor's raw blocks; exact where the source's values allow it."""
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    values = quants.dequantize(raw, Q[qtype])
    out = quants.quantize(values, Q.Q8_0)
    n = _EXACT_DIVISOR.get(qtype)
    if n is None:
        return out
    x = values.reshape(-1, 32)
    d = np.ascontiguousarray(raw.reshape(x.shape[0], -1)[:, :2]).view(np.float16)[:, 0].astype(np.float32)
    d8 = (d / n).astype(np.float16)
    scale = d8.astype(np.float32)
    k = np.round(x / np.where(scale == 0, 1, scale)[:, None])
    exact = (np.abs(k) <= 127).all(axis=1) & (k * scale[:, None] == x).all(axis=1)  # else: a subnormal scale
    blocks = out.reshape(-1, 34)
    blocks[exact, :2] = d8[exact].view(np.uint8).reshape(-1, 2)
    blocks[exact, 2:] = k[exact].astype(np.int8).view(np.uint8)
    return blocks.reshape(out.shape)


@contextlib.contextmanager
def _locked(source: Path, target: str) -> Iterator[None]:
    """One process derives at a time (the others then find the file made)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the atomic rename still keeps files whole
        yield
        return
    with open(source.with_name(f".{source.stem}.{target}.lock"), "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def derive(source: Path, source_sha256: str | None, target: str = "q8_0", *, force: bool = False,
           progress: Progress | None = None) -> dict[str, Any]:
    """The manifest of the derived file of ``source``, made now if missing, damaged or made from another source.

    ``manifest["status"]``: "reused" (intact), "derived" (made now). A file made again whose sha256
    equals the one verified before keeps that verification (the conversion is deterministic).
    """
    say = progress or (lambda _m: None)
    dest = derived_path(source, target)
    if not os.access(source.parent, os.W_OK):
        raise ModelError(f"cannot write the {target.upper()} weights beside {source}: its folder is not writable. Copy "
                         "the model into a writable folder and `bastion model add` it, or keep llm.weights = \"shipped\"")
    with _locked(source, target):
        old = read_manifest(source, target)
        same_source = old is not None and source_sha256 is not None and old.get("source", {}).get("sha256") == source_sha256
        if old is not None and same_source and not force and dest.is_file():
            if sha256_file(dest) == old["derived"].get("sha256"):
                return {**old, "status": "reused"}
            say(f"{dest.name} does not match its recorded sha256 (damaged); deriving it again")
        digest_src = verify_model_file(source, source_sha256)
        say(f"re-encoding {source.name} to {target.upper()}")
        partial = dest.with_name(dest.name + ".partial")
        t0 = time.perf_counter()
        try:
            done = convert(source, partial, target, source_sha256=digest_src)
            counts = done.pop("types")
            shutil.copymode(source, partial)
            digest = sha256_file(partial)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        keep = (old or {}).get("verification") if (old and not force and old["derived"].get("sha256") == digest
                                                  and old.get("source", {}).get("sha256") == digest_src) else None
        man: dict[str, Any] = {
            "format": 1, "target": target, "converter": converter_version(),
            "source": {"file": source.name, "sha256": digest_src, "types": counts, "size": source.stat().st_size},
            "derived": {"file": dest.name, "sha256": digest, "size": dest.stat().st_size, **done},
            "derived_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "seconds": round(time.perf_counter() - t0, 1),
            "verification": keep, "measured": (old or {}).get("measured") if keep else None}
        _write_manifest(source, target, man)
        say(f"wrote {dest} ({dest.stat().st_size / 1e6:.0f} MB, sha256 {digest[:16]}…) in {man['seconds']} s")
        return {**man, "status": "derived"}


def verify_weights(source: Path, target: str = "q8_0", *, threads: int | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Greedy answers of the source and the derived file on the stock runtime; recorded in the manifest.

    The rule is the native build's (:data:`~bastion.generation.native_build.VERIFY_PROMPTS`): every
    answer agrees for its first ``VERIFY_MATCH_TOKENS`` tokens, and at least one is identical.
    """
    from bastion.generation.native_build import (
        VERIFY_PROMPTS,
        RuntimeWorker,
        compare_greedy,
    )

    say = progress or (lambda _m: None)
    man = read_manifest(source, target)
    if man is None:
        raise ModelError(f"no {target} weights derived from {source} yet")
    say(f"verifying: greedy answers of the shipped and the {target.upper()} weights on {len(VERIFY_PROMPTS)} prompts")
    shipped = RuntimeWorker("stock", source, threads=threads, context_window=1024)
    derived = RuntimeWorker("stock", derived_path(source, target), threads=threads, context_window=1024)
    try:
        verdict = compare_greedy(shipped, derived, ("shipped", "derived"), "the shipped weights'")
    finally:
        shipped.close()
        derived.close()
    verdict.update(runtime="stock", derived_sha256=man["derived"]["sha256"])
    man["verification"] = verdict
    _write_manifest(source, target, man)
    return verdict


def measure_weights(source: Path, target: str = "q8_0", *, tokens: int = 1000, runs: int = 2,
                    threads: int | None = None) -> dict[str, Any]:
    """Prompt tokens/s, time to first token and decode tokens/s of both files (stock runtime, alternating)."""
    from bastion.generation.native_build import RuntimeWorker, filler_prompt, prompt_speed
    from bastion.generation.protocol import ChatMessage

    man = read_manifest(source, target)
    if man is None:
        raise ModelError(f"no {target} weights derived from {source} yet")
    window = max(2048, tokens + 256)
    workers = {"shipped": RuntimeWorker("stock", source, context_window=window, threads=threads),
               target: RuntimeWorker("stock", derived_path(source, target), context_window=window, threads=threads)}
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in workers}
    try:
        messages = filler_prompt(workers["shipped"], tokens)
        question = [ChatMessage("system", "Answer in one sentence."), ChatMessage("user", "Why is the sky blue?")]
        for run in range(runs):
            for k in (list(workers) if run % 2 == 0 else list(workers)[::-1]):
                row = prompt_speed(workers[k], messages)
                row["decode_tps"] = float(workers[k].ask(question, 32)["timings"].get("predicted_per_second", 0.0))
                rows[k].append(row)
    finally:
        for w in workers.values():
            w.close()
    med = {k: {m: round(statistics.median(r[m] for r in v), 2) for m in ("prompt_tps", "ttft_s", "decode_tps")}
           for k, v in rows.items()}
    out = {"prompt_tokens": int(rows["shipped"][0]["prompt_tokens"]), "runtime": "stock", **med,
           "speedup": round(med[target]["prompt_tps"] / med["shipped"]["prompt_tps"], 2)
           if med["shipped"]["prompt_tps"] else None, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    man["measured"] = out
    _write_manifest(source, target, man)
    return out


def prepare(source: Path, source_sha256: str | None, target: str = "q8_0", *, threads: int | None = None,
            force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Derive (or reuse) and verify; returns the manifest. Raises ModelError if verification failed."""
    man = derive(source, source_sha256, target, force=force, progress=progress)
    if (man.get("verification") or {}).get("derived_sha256") != man["derived"]["sha256"]:
        status = man["status"]
        man = {**man, "verification": verify_weights(source, target, threads=threads, progress=progress),
               "status": status}
    verdict = man["verification"]
    if not verdict.get("ok"):
        raise ModelError(f"the {target.upper()} weights derived from {source.name} failed verification: "
                         f"{verdict.get('problem')}; they are not used. Keep llm.weights = \"shipped\"")
    return man


def weights_for(info: ModelInfo, weights: str, *, threads: int | None = None,
                progress: Progress | None = None) -> tuple[str, str]:
    """(path, sha256) of the file an in-process model loads under ``[llm] weights``."""
    assert info.path is not None
    if weights == "shipped":
        return info.path, info.sha256 or verify_model_file(Path(info.path), None)
    man = prepare(Path(info.path), info.sha256, weights, threads=threads, progress=progress)
    return str(derived_path(Path(info.path), weights)), str(man["derived"]["sha256"])


def remove_derived(source: Path) -> None:
    """Delete the files derived from ``source`` (they can be made again)."""
    for target in TARGETS:
        for p in (derived_path(source, target), manifest_path(source, target),
                  source.with_name(f".{source.stem}.{target}.lock")):
            p.unlink(missing_ok=True)


def weights_status(source: Path, weights: str) -> dict[str, Any]:
    """What ``[llm] weights`` loads for the model file ``source``, without hashing it (``bastion doctor``).

    ``problem`` is set when loading would be refused (the derived copy failed verification).
    """
    if weights == "shipped":
        return {"weights": weights, "text": "shipped (the file as registered)", "problem": None}
    man = read_manifest(source, weights)
    dest = derived_path(source, weights)
    if man is None or not dest.is_file():
        return {"weights": weights, "text": f"{weights}: not derived yet (made and verified on first load, or "
                                            f"`bastion model reencode --to {weights}`)", "problem": None}
    v = man.get("verification") or {}
    if v.get("ok") is False:
        return {"weights": weights, "text": f"{weights}: refused, {v.get('problem')}",
                "problem": f"llm.weights = {weights!r}: the copy {dest} failed verification ({v.get('problem')}); "
                           "set llm.weights = \"shipped\""}
    state = "verified" if v.get("ok") else "verified on first load"
    return {"weights": weights, "text": f"{weights}: {state} copy {dest.name} (sha256 "
                                        f"{str(man['derived'].get('sha256'))[:16]}…)", "problem": None}



__all__ = ["CONVERTER_VERSION", "SOURCE_TYPES", "TARGETS", "check_convertible", "convert", "derive", "derived_path",
           "manifest_path", "measure_weights", "prepare", "read_manifest", "remove_derived", "verify_weights",
           "weights_for", "weights_status"]
