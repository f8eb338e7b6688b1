"""Re-encoded weights (``[llm] weights = "q8_0"`` or ``"bf16"``): the same model, in a type llama.cpp computes faster.

llama.cpp evaluates prompts through llamafile's batched tinyBLAS kernels for Q8_0, BF16, F16 and F32
weights, but multiplies Q4_1 / Q5_1 weights row by row (Q4_0 / Q5_0 have batched kernels too). The
values of those 4/5-bit types are exactly representable as floats, so each tensor is dequantized
exactly and encoded again:

- ``q8_0`` (8 bits, one scale per 32 values; fast on every x86 build): a Q4_0 or Q5_0 block's
  values are multiples of its scale d, so with the Q8_0 scale d/8 (Q4_0) or d/4 (Q5_0) they are
  represented exactly; Q4_1 / Q5_1 blocks carry an offset as well, and each block takes the Q8_0
  scale of least squared error (:func:`_closest_q8_0`), about 1 % of a 4-bit step (RMS);
- ``bf16`` (each value rounded to the nearest bfloat16, a relative error below 2^-9): fast where
  llama.cpp has bfloat16 kernels, i.e. a native build (``bastion model runtime build``) on a CPU
  with AVX512_BF16; the stock wheel computes it no faster than Q4_1.

Tensors of other types (the F32 norms, an embedding already in Q8_0) are copied unchanged; types
these cannot represent closely (K-quants, I-quants, F16, BF16) are refused.

The derived file is made once from the verified source (its pinned sha256), written atomically beside
it (so it lives where the source lives, with the source's file mode), with a manifest
``<stem>.<target>.json`` holding the source and derived sha256, the converter version and the
verification verdict. It is used only after :func:`verify_weights` judged it by the quality rule of
:func:`compare_distributions` (next-token distributions of both files, on the stock runtime, along
the shipped weights' own answers); a damaged or missing derived file is made again, never downloaded.

Why not the native build's rule (the same greedy tokens): that rule fits a recompilation of the
same arithmetic. A re-encoding changes the arithmetic: Q4_1 weights multiply activations rounded
to Q8_1 row by row, Q8_0 weights multiply activations rounded to Q8_0 in batched kernels, BF16
weights multiply activations rounded to bfloat16. Greedy answers then fork wherever two tokens are
nearly tied, as they do when llama.cpp reads the same text as one batch or token by token; what
must hold is that the model predicts the same.
"""
from __future__ import annotations

import contextlib
import json
import math
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

CONVERTER_VERSION = 2  # bump when the conversion changes what it writes
RULE_VERSION = 2  # bump when the acceptance rule changes: verdicts of an older rule are made again
MAX_MEAN_KL = 0.01  # nats per token, KL(shipped || derived), mean over all positions
MIN_SAME_TOP = 0.95  # share of positions whose most likely next token is the same
TOP_K = 40  # probabilities compared per position: each model's 40 most likely tokens
RUNTIME_NOISE_EVERY = 4  # every 4th position is also evaluated in one batch (the runtime's own variation)
QUALITY_PROMPTS = (
    ("Answer only from the sources. Cite them as [n].",
     "Sources:\n[1] Employees get 25 days of annual leave; up to 5 unused days carry over to the next year.\n"
     "[2] Sick leave needs a doctor's note after three days.\n\nQuestion: How many unused leave days carry over?"),
    ("Answer only from the sources. If they do not answer, say it is not in the sources.",
     "Sources:\n[1] The data centre in Frankfurt runs on renewable power since 2021.\n[2] Backups are kept for 90 "
     "days.\n\nQuestion: Where is the disaster recovery site?"),
    ("只根据资料回答，并用 [n] 标注来源。",
     "资料：\n[1] 员工每年有 15 天年假，未休的年假最多可顺延 5 天。\n[2] 报销须在出差结束后 30 天内提交。\n\n问题：报销的期限是多久？"),
    ("Answer in one sentence.", "What does a firewall do?"),
    ("You are a helpful assistant.", "Translate to French: The meeting is moved to Tuesday."),
)
TARGETS = ("q8_0", "bf16")
SOURCE_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1")  # Q8_0 and BF16 represent their values closely
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
    from gguf import GGUFValueType, GGUFWriter, LlamaFileType, quants

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
    writer.add_file_type(LlamaFileType.MOSTLY_Q8_0 if target == "q8_0" else LlamaFileType.MOSTLY_BF16)
    writer.add_string("bastion.reencode.source_sha256", source_sha256)
    writer.add_string("bastion.reencode.converter", converter_version())
    plan = []
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))  # numpy order
        convert_it = t.tensor_type.name in SOURCE_TYPES
        qtype = (Q.Q8_0 if target == "q8_0" else Q.BF16) if convert_it else t.tensor_type
        if not convert_it:
            nbytes = int(t.data.nbytes)
        else:
            nbytes = int(t.n_elements) // 32 * 34 if target == "q8_0" else int(t.n_elements) * 2
        writer.add_tensor_info(t.name, shape, np.dtype(np.float32), nbytes, raw_dtype=qtype)
        plan.append((t, convert_it))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    done = {"converted": 0, "kept": 0}
    for t, convert_it in plan:
        if convert_it and target == "q8_0":
            writer.write_tensor_data(_to_q8_0(np.asarray(t.data), t.tensor_type.name))
        elif convert_it:  # bf16: round each value to the nearest bfloat16
            values = quants.dequantize(np.asarray(t.data), Q[t.tensor_type.name])
            writer.write_tensor_data(quants.quantize(values, Q.BF16))
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
        return _closest_q8_0(values.reshape(-1, 32), out)
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


def _closest_q8_0(x: Any, out: Any) -> Any:
    """Q8_0 blocks of ``x`` (rows of 32 values) with, per block, the scale of least squared error.

    A Q4_1 / Q5_1 block's values (d * q + m) sit on a grid that the standard scale (largest
    magnitude / 127) cuts at random; trying the scales largest magnitude / L for L = 127 ... 64
    (every one keeps each value within the int8 range) finds one that fits the grid better: on the
    default model's first query matrix the squared error falls about sixfold (RMS 0.9 % of a 4-bit step).
    """
    import numpy as np

    amax = np.abs(x).max(axis=1)
    best_err = np.full(x.shape[0], np.inf, np.float32)
    best_scale = np.zeros(x.shape[0], np.float16)
    for limit in range(127, 63, -1):
        scale = (amax / limit).astype(np.float16)
        s32 = scale.astype(np.float32)
        k = np.clip(np.round(x / np.where(s32 == 0, 1, s32)[:, None]), -127, 127)
        err = ((x - k * s32[:, None]) ** 2).sum(axis=1)
        better = err < best_err
        best_err[better], best_scale[better] = err[better], scale[better]
    s32 = best_scale.astype(np.float32)
    k = np.clip(np.round(x / np.where(s32 == 0, 1, s32)[:, None]), -127, 127).astype(np.int8)
    blocks = out.reshape(-1, 34).copy()
    blocks[:, :2] = best_scale.view(np.uint8).reshape(-1, 2)
    blocks[:, 2:] = k.view(np.uint8)
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


def _kl(p: dict[int, float], q: dict[int, float]) -> float:
    """KL(p || q) in nats from two top-k lists of log-probabilities: over p's listed tokens, with q's
    probability of a token it does not list taken as its unlisted mass spread over the rest of the
    vocabulary, capped at its smallest listed probability."""
    q_rest = max(0.0, 1.0 - sum(math.exp(v) for v in q.values()))
    floor = math.log(max(min(min(math.exp(v) for v in q.values()), q_rest / 1000.0), 1e-12))
    return sum(math.exp(lp) * (lp - q.get(t, floor)) for t, lp in p.items())


def _top(d: dict[int, float]) -> int:
    return max(d, key=lambda t: d[t])


def compare_distributions(shipped: Any, derived: Any, say: Progress) -> dict[str, Any]:
    """The verdict of the quality rule: both models' next-token distributions along the shipped
    weights' own greedy answers to :data:`QUALITY_PROMPTS` and the native build's prompts.

    Each answer's tokens are fed to both models one at a time, as in generation (teacher forcing:
    both always see the same text), and at each position the two distributions are compared. For
    scale, the shipped weights are also compared with themselves at every fourth position, that
    position's text evaluated in one batch (as a prompt) against token by token: llama.cpp's own
    variation between its two ways of reading the same text.
    """
    from bastion.generation.native_build import VERIFY_MAX_TOKENS, VERIFY_PROMPTS
    from bastion.generation.protocol import ChatMessage

    prompts = VERIFY_PROMPTS + QUALITY_PROMPTS
    kls: list[float] = []
    same: list[bool] = []
    noise: list[float] = []
    cases = []
    for i, (system, user) in enumerate(prompts, 1):
        say(f"  answer {i}/{len(prompts)}")
        msgs = [ChatMessage("system", system), ChatMessage("user", user)]
        answer = str(shipped.ask(msgs, VERIFY_MAX_TOKENS)["text"])
        prompt = shipped.prompt_tokens(msgs)
        seq = prompt + shipped.tokenize(answer)
        for w in (shipped, derived):  # each engine's cache: the prompt, read in one batch
            w.next_token_logprobs(prompt, TOP_K, reuse=False)
        stepwise = {}
        case_kl: list[float] = []
        case_same = 0
        for j in range(len(prompt), len(seq)):
            a = shipped.next_token_logprobs(seq[:j], TOP_K, reuse=True)
            b = derived.next_token_logprobs(seq[:j], TOP_K, reuse=True)
            stepwise[j] = a
            case_kl.append(_kl(a, b))
            case_same += _top(a) == _top(b)
        for j in range(len(prompt), len(seq), RUNTIME_NOISE_EVERY):
            noise.append(_kl(shipped.next_token_logprobs(seq[:j], TOP_K, reuse=False), stepwise[j]))
        kls += case_kl
        same += [True] * case_same + [False] * (len(case_kl) - case_same)
        cases.append({"question": user[:60], "positions": len(case_kl),
                      "mean_kl": round(statistics.fmean(case_kl), 5) if case_kl else 0.0,
                      "same_top": round(case_same / len(case_kl), 4) if case_kl else 1.0})
    n = len(kls)
    mean_kl = statistics.fmean(kls) if kls else 0.0
    same_top = sum(same) / n if n else 1.0
    problems = []
    if mean_kl > MAX_MEAN_KL:
        problems.append(f"its next-token distributions differ from the shipped weights' by {mean_kl:.4f} nats per "
                        f"token on average (at most {MAX_MEAN_KL})")
    if same_top < MIN_SAME_TOP:
        problems.append(f"its most likely next token is the shipped weights' at {same_top:.1%} of positions "
                        f"(at least {MIN_SAME_TOP:.0%})")
    return {"ok": not problems and n > 0, "rule_version": RULE_VERSION,
            "rule": f"along the shipped weights' greedy answers to {len(prompts)} prompts, the next-token "
                    f"distributions differ by at most {MAX_MEAN_KL} nats per token on average (KL divergence over "
                    f"each model's {TOP_K} most likely tokens) and the most likely token is the same at "
                    f"{MIN_SAME_TOP:.0%} of positions or more",
            "positions": n, "mean_kl": round(mean_kl, 5), "p99_kl": round(sorted(kls)[int(0.99 * (n - 1))], 4) if n else 0.0,
            "same_top": round(same_top, 4),
            "runtime_kl": round(statistics.fmean(noise), 5) if noise else 0.0, "cases": cases,
            "problem": "; ".join(problems) or (None if n else "no positions were compared"),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def verify_weights(source: Path, target: str = "q8_0", *, threads: int | None = None,
                   progress: Progress | None = None) -> dict[str, Any]:
    """Judge the derived file against the source on the stock runtime; recorded in the manifest.

    A re-encoding changes the arithmetic (other kernels, other rounding of the activations), so the
    rule is about the model's predictions, not token-for-token identity: :func:`compare_distributions`.
    The greedy answers of both on the native build's prompts are recorded beside it, for information.
    """
    from bastion.generation.native_build import RuntimeWorker, compare_greedy

    say = progress or (lambda _m: None)
    man = read_manifest(source, target)
    if man is None:
        raise ModelError(f"no {target} weights derived from {source} yet")
    say(f"verifying: next-token distributions of the shipped and the {target.upper()} weights")
    shipped = RuntimeWorker("stock", source, threads=threads, context_window=1024)
    derived = RuntimeWorker("stock", derived_path(source, target), threads=threads, context_window=1024)
    try:
        verdict = compare_distributions(shipped, derived, say)
        greedy = compare_greedy(shipped, derived, ("shipped", "derived"), "the shipped weights'")
    finally:
        shipped.close()
        derived.close()
    verdict.update(runtime="stock", derived_sha256=man["derived"]["sha256"],
                   greedy={"identical": sum(c["identical"] for c in greedy["cases"]), "answers": len(greedy["cases"]),
                           "cases": greedy["cases"]})
    man["verification"] = verdict
    _write_manifest(source, target, man)
    return verdict


def measure_weights(source: Path, target: str = "q8_0", *, tokens: int = 1000, runs: int = 2,
                    threads: int | None = None, runtime: str = "auto") -> dict[str, Any]:
    """Prompt tokens/s, time to first token and decode tokens/s of both files, alternating, on the
    runtime ``[llm] runtime = runtime`` picks for a new process (a verified native build, else the stock wheel)."""
    from bastion.generation.native_build import RuntimeWorker, filler_prompt, prompt_speed
    from bastion.generation.native_runtime import select_runtime
    from bastion.generation.protocol import ChatMessage

    man = read_manifest(source, target)
    if man is None:
        raise ModelError(f"no {target} weights derived from {source} yet")
    choice = select_runtime(runtime, in_process=False)
    where = str(choice.runtime.path) if choice.runtime is not None else "stock"
    window = max(2048, tokens + 256)
    workers = {"shipped": RuntimeWorker(where, source, context_window=window, threads=threads),
               target: RuntimeWorker(where, derived_path(source, target), context_window=window, threads=threads)}
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
    out = {"prompt_tokens": int(rows["shipped"][0]["prompt_tokens"]), "runtime": choice.kind, **med,
           "speedup": round(med[target]["prompt_tps"] / med["shipped"]["prompt_tps"], 2)
           if med["shipped"]["prompt_tps"] else None, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    man["measured"] = out
    _write_manifest(source, target, man)
    return out


def judged(man: dict[str, Any]) -> bool:
    """Whether the manifest's verdict is about its derived file's bytes and under the current rule."""
    v = man.get("verification") or {}
    return v.get("derived_sha256") == man["derived"]["sha256"] and v.get("rule_version") == RULE_VERSION


def prepare(source: Path, source_sha256: str | None, target: str = "q8_0", *, threads: int | None = None,
            force: bool = False, progress: Progress | None = None) -> dict[str, Any]:
    """Derive (or reuse) and verify; returns the manifest. Raises ModelError if verification failed."""
    man = derive(source, source_sha256, target, force=force, progress=progress)
    if not judged(man):
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
    if v.get("rule_version") != RULE_VERSION:
        v = {}  # judged by an older rule: judged again on first load
    if v.get("ok") is False:
        return {"weights": weights, "text": f"{weights}: refused, {v.get('problem')}",
                "problem": f"llm.weights = {weights!r}: the copy {dest} failed verification ({v.get('problem')}); "
                           "set llm.weights = \"shipped\""}
    state = "verified" if v.get("ok") else "verified on first load"
    return {"weights": weights, "text": f"{weights}: {state} copy {dest.name} (sha256 "
                                        f"{str(man['derived'].get('sha256'))[:16]}…)", "problem": None}



__all__ = ["CONVERTER_VERSION", "MAX_MEAN_KL", "MIN_SAME_TOP", "RULE_VERSION", "SOURCE_TYPES", "TARGETS",
           "check_convertible", "compare_distributions", "convert", "derive", "derived_path", "judged",
           "manifest_path", "measure_weights", "prepare", "read_manifest", "remove_derived", "verify_weights",
           "weights_for", "weights_status"]
