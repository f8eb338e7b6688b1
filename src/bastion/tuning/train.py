"""LoRA fine-tuning of a GGUF base model on chat examples, on the CPU or a CUDA GPU.

transformers reads the GGUF, dequantised, into a trainable model; peft puts a LoRA adapter on
every linear layer; the loss counts only the assistant turns. A run is deterministic for its
seed, checkpoints atomically into ``out_dir/checkpoint`` and continues from there after a crash.
:func:`bastion.tuning.export.export_lora_gguf` turns the adapter it leaves in ``out_dir/adapter``
into a llama.cpp LoRA GGUF.

Dequantising a GGUF through transformers takes long, so the first load keeps the converted model
(float32 safetensors, about four bytes a parameter) under ``$XDG_CACHE_HOME/bastion/tune/``, keyed
by the file's sha256 and the transformers version; later loads read that copy.

torch, transformers and peft come with the ``tune`` extra and are imported only when training.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bastion.core.errors import ConfigError, MissingExtraError, ModelError
from bastion.generation.llamacpp import sha256_file

ROLES = ("system", "user", "assistant")
IGNORE = -100  # the label of a token the loss skips
CHECKPOINT = "checkpoint"
ADAPTER = "adapter"
TRAINING_FILE = "training.json"  # beside the peft files: what the adapter was trained on
_STATE = "state.pt"
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
_FORMAT = 1
_FINGERPRINT_FIELDS = ("rank", "alpha", "dropout", "lr", "batch_size", "grad_accum", "max_seq_tokens", "epochs", "seed",
                      "layers")


@dataclass(frozen=True)
class ChatExample:
    """One training conversation; the loss is taken on the assistant turns only.

    Example:
        >>> ex = ChatExample([{"role": "user", "content": "Codename of Zephyr?"},
        ...                   {"role": "assistant", "content": "BLUEHERON-7."}])
        >>> ex.messages[-1]["role"]
        'assistant'
    """

    messages: list[dict[str, str]]

    def __post_init__(self) -> None:
        roles = [m.get("role") for m in self.messages]
        if any(r not in ROLES for r in roles) or any(not isinstance(m.get("content"), str) for m in self.messages):
            raise ConfigError(f"a chat example needs messages with a role in {ROLES} and a text content, got {roles}")
        if "assistant" not in roles or roles[0] == "assistant":
            raise ConfigError(f"a chat example needs an assistant turn after a user or system turn, got roles {roles}")


@dataclass
class TrainConfig:
    """Hyper-parameters and budget of a LoRA run.

    ``epochs`` sets the plan (and the learning-rate schedule); ``max_steps`` and ``max_seconds``
    only cut it short. ``max_seconds`` counts the training time of all runs of one ``out_dir``,
    resumed ones included.

    Example:
        >>> TrainConfig(max_steps=10).rank
        16
    """

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    lr: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    max_seq_tokens: int = 512
    epochs: float = 1.0
    max_steps: int | None = None
    max_seconds: float | None = None
    seed: int = 0
    checkpoint_every: int = 20
    threads: int | None = None  # torch's own default when None; on a busy machine fewer can be faster
    layers: int | None = None  # LoRA on the last N decoder layers only (backward stops below them); all when None
    device: str = "auto"  # cpu | cuda | auto

    def __post_init__(self) -> None:
        positive = {"rank": self.rank, "alpha": self.alpha, "lr": self.lr, "batch_size": self.batch_size,
                    "grad_accum": self.grad_accum, "max_seq_tokens": self.max_seq_tokens, "epochs": self.epochs,
                    "checkpoint_every": self.checkpoint_every}
        for name, value in positive.items():
            if not value > 0:
                raise ConfigError(f"TrainConfig.{name} must be positive, got {value!r}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"TrainConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name, opt in (("max_steps", self.max_steps), ("max_seconds", self.max_seconds), ("threads", self.threads),
                          ("layers", self.layers)):
            if opt is not None and not opt > 0:
                raise ConfigError(f"TrainConfig.{name} must be positive or None, got {opt!r}")
        if self.device not in ("cpu", "cuda", "auto"):
            raise ConfigError(f"TrainConfig.device must be 'cpu', 'cuda' or 'auto', got {self.device!r}")


@dataclass
class TrainResult:
    """What a run did; ``train_loss`` has one entry per optimizer step (resumed steps included)."""

    steps: int
    epochs_done: float
    train_loss: list[float]
    val_loss: float | None
    seconds: float
    tokens: int
    peak_rss_mb: float  # of this process so far
    stopped: str  # "done" | "max_steps" | "max_seconds"
    adapter_dir: Path
    dropped: int = 0  # training examples left out: their assistant turn did not fit max_seq_tokens
    device: str = "cpu"


def _import_stack() -> tuple[Any, Any, Any]:
    try:
        import peft
        import torch
        import transformers
    except ImportError as exc:
        raise MissingExtraError(
            f"fine-tuning needs the 'tune' extra (torch, transformers, peft; {exc.name!r} is missing): "
            "pip install 'bastion[tune]'") from exc
    return torch, transformers, peft


def encode_chat(tokenizer: Any, example: ChatExample, max_seq_tokens: int) -> tuple[list[int], list[int]] | None:
    """Token ids and labels of one example through the tokenizer's chat template.

    Labels are ``IGNORE`` except on the assistant turns (their text and the end-of-turn marker).
    Returns None when an assistant turn would not fit ``max_seq_tokens``; a tail without
    assistant text is cut.
    """
    msgs = example.messages

    def render(part: list[dict[str, str]], prompt: bool = False) -> str:
        return str(tokenizer.apply_chat_template(part, tokenize=False, add_generation_prompt=prompt))

    full = render(msgs)
    spans: list[tuple[int, int]] = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        head, turn = render(msgs[:i], prompt=True), render(msgs[: i + 1])
        if not (full.startswith(head) and full.startswith(turn) and len(head) <= len(turn)):
            raise ConfigError("the model's chat template does not render a conversation as a sequence of "
                              "turns, so the assistant text cannot be told apart; it cannot be tuned here")
        spans.append((len(head), len(turn)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [t if any(a <= start < b for a, b in spans) else IGNORE
              for t, (start, _end) in zip(ids, enc["offset_mapping"])]
    last = max((j for j, lab in enumerate(labels) if lab != IGNORE), default=None)
    if last is None or last >= max_seq_tokens:
        return None
    return ids[:max_seq_tokens], labels[:max_seq_tokens]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bastion" / "tune"


@contextlib.contextmanager
def _quiet_transformers(transformers: Any) -> Iterator[None]:
    logging = transformers.utils.logging
    bars, level = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    tqdm_before = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF conversion's own tqdm bar, which transformers' switch misses
    try:
        yield
    finally:
        logging.set_verbosity(level)
        if bars:
            logging.enable_progress_bar()
        if tqdm_before is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = tqdm_before


def load_base(base_gguf: Path, digest: str, *, dtype: Any = None) -> tuple[Any, Any]:
    """The base model (a transformers ``LlamaForCausalLM``) and its tokenizer, read from a GGUF file.

    The first call converts the GGUF (slow) and keeps the result in the cache; ``digest`` is the
    file's sha256, which names the cached copy.
    """
    torch, transformers, _ = _import_stack()
    auto_model, auto_tok = transformers.AutoModelForCausalLM, transformers.AutoTokenizer
    cache = _cache_root() / f"{digest[:24]}-transformers-{transformers.__version__}"
    with _quiet_transformers(transformers):
        if not (cache / "config.json").is_file():
            src = dict(gguf_file=base_gguf.name, local_files_only=True)
            try:
                tok = auto_tok.from_pretrained(str(base_gguf.parent), **src)
                model = auto_model.from_pretrained(str(base_gguf.parent), dtype=torch.float32, **src)
            except Exception as exc:
                raise ModelError(f"transformers could not read {base_gguf} as a model: {exc}") from exc
            model.config.quantization_config = None  # the copy is plain float32, not a GGUF to dequantise
            del model.config.quantization_config
            model.hf_quantizer = None
            tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
            try:
                os.replace(tmp, cache)
            except OSError:  # another process cached it first
                shutil.rmtree(tmp, ignore_errors=True)
        tok = auto_tok.from_pretrained(str(cache), local_files_only=True)
        model = auto_model.from_pretrained(str(cache), local_files_only=True, dtype=dtype or torch.float32)
    model.config.use_cache = False
    return model, tok


@dataclass
class _Plan:
    """Which examples each optimizer step takes: a seeded permutation per epoch, read in order."""

    n: int
    per_step: int
    limit: int  # examples consumed by the whole plan
    planned: int  # steps the epochs amount to
    total: int  # steps this run may take (max_steps applied)
    order: list[list[int]] = field(default_factory=list)

    @classmethod
    def make(cls, torch: Any, n: int, cfg: TrainConfig) -> _Plan:
        per_step = cfg.batch_size * cfg.grad_accum
        limit = max(1, round(cfg.epochs * n))
        planned = math.ceil(limit / per_step)
        gen = torch.Generator().manual_seed(cfg.seed)
        order = [torch.randperm(n, generator=gen).tolist() for _ in range(math.ceil(limit / n))]
        return cls(n, per_step, limit, planned, min(planned, cfg.max_steps or planned), order)

    def examples(self, step: int) -> list[int]:
        return [self.order[i // self.n][i % self.n]
                for i in range(step * self.per_step, min((step + 1) * self.per_step, self.limit))]

    def lr(self, base: float, step: int) -> float:
        """Linear warm-up over the first 5 % of the plan, then a cosine decay to a tenth."""
        warmup = max(1, math.ceil(0.05 * self.planned))
        progress = step / max(1, self.planned - 1)
        return base * min(1.0, (step + 1) / warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * progress)))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _swap_in(tmp: Path, target: Path) -> None:
    """Replace the directory ``target`` by ``tmp``; a crash leaves ``target`` or ``target.old`` whole."""
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    old = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    shutil.rmtree(old, ignore_errors=True)


def _read_checkpoint(torch: Any, out_dir: Path, device: str) -> dict[str, Any] | None:
    for cand in (out_dir / CHECKPOINT, out_dir / f"{CHECKPOINT}.old"):
        if (cand / _STATE).is_file():
            state: dict[str, Any] = torch.load(cand / _STATE, map_location=device, weights_only=True)
            return state
    return None


@contextlib.contextmanager
def _torch_settings(torch: Any, threads: int | None) -> Iterator[None]:
    """Deterministic kernels and the thread count for the run; the previous settings come back after."""
    prev = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())
    if threads:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(prev[0])
        torch.use_deterministic_algorithms(prev[1], warn_only=prev[2])


def _pick_device(torch: Any, wanted: str) -> str:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError("TrainConfig.device is 'cuda' but torch sees no CUDA device; use 'cpu' or 'auto'")
    if wanted != "cpu" and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
        return "cuda"
    return "cpu"


def _loss_sum(torch: Any, model: Any, rows: list[tuple[list[int], list[int]]], pad: int, device: str) -> tuple[Any, int]:
    """Summed cross-entropy over the labelled tokens of a batch, and the batch's token count."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r[0] + [pad] * (width - len(r[0])) for r in rows], device=device)
    labels = torch.tensor([r[1] + [IGNORE] * (width - len(r[1])) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r[0]) + [0] * (width - len(r[0])) for r in rows], device=device)
    inner = model.get_base_model()
    hidden = inner.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    keep = target != IGNORE
    logits = inner.lm_head(hidden[:, :-1][keep]).float()  # only where a label is: the vocabulary is wide
    return torch.nn.functional.cross_entropy(logits, target[keep], reduction="sum"), sum(len(r[0]) for r in rows)


def _val_loss(torch: Any, model: Any, rows: list[tuple[list[int], list[int]]], batch: int, pad: int,
              device: str) -> float | None:
    if not rows:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), batch):
            part = rows[i:i + batch]
            loss, _ = _loss_sum(torch, model, part, pad, device)
            total += loss.item()
            count += sum(1 for r in part for lab in r[1][1:] if lab != IGNORE)
    model.train()
    return total / max(1, count)


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def _fingerprint(digest: str, cfg: TrainConfig, rows: list[tuple[list[int], list[int]]]) -> str:
    blob = json.dumps({"base": digest, "cfg": {k: getattr(cfg, k) for k in _FINGERPRINT_FIELDS}, "rows": rows})
    return hashlib.sha256(blob.encode()).hexdigest()


def train_lora(base_gguf: Path, train: Sequence[ChatExample], out_dir: Path, cfg: TrainConfig, *,
               val: Sequence[ChatExample] = (), progress: Callable[[int, int, float], None] | None = None,
               resume: bool = True) -> TrainResult:
    """Train a LoRA adapter of ``base_gguf`` on ``train``; the adapter lands in ``out_dir/adapter``.

    Args:
        base_gguf: the base model's GGUF file.
        train: training conversations.
        out_dir: the run's folder: ``checkpoint`` (written every ``cfg.checkpoint_every`` steps and
            at the end) and ``adapter`` (peft safetensors and config, plus ``training.json``).
        cfg: hyper-parameters and budget.
        val: conversations for a validation loss, measured once at the end.
        progress: called after each optimizer step with (step, total steps, that step's loss).
        resume: continue from ``out_dir/checkpoint`` when there is one; False starts afresh.

    Returns:
        What the run did; ``stopped`` says which limit ended it.

    Raises:
        MissingExtraError: torch, transformers or peft is not installed.
        ConfigError: bad examples or settings, or a checkpoint made with other data or settings.
        ModelError: the base file is missing or not a model transformers can read.
    """
    torch, _, peft = _import_stack()
    base_gguf, out_dir = Path(base_gguf), Path(out_dir)
    if not base_gguf.is_file():
        raise ModelError(f"base model file {base_gguf} does not exist; pull the model first")
    if not train:
        raise ConfigError("no training examples")
    device = _pick_device(torch, cfg.device)
    dtype = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    digest = sha256_file(base_gguf)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in [*out_dir.glob(f".{CHECKPOINT}.tmp-*"), *out_dir.glob(f".{ADAPTER}.tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a run that was killed while writing
    with _torch_settings(torch, cfg.threads):
        model, tok = load_base(base_gguf, digest, dtype=dtype)
        encoded = [encode_chat(tok, ex, cfg.max_seq_tokens) for ex in train]
        rows = [r for r in encoded if r is not None]
        if not rows:
            raise ConfigError(f"no training example fits max_seq_tokens={cfg.max_seq_tokens}")
        val_rows = [r for r in (encode_chat(tok, ex, cfg.max_seq_tokens) for ex in val) if r is not None]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        fingerprint = _fingerprint(digest, cfg, rows)
        plan = _Plan.make(torch, len(rows), cfg)

        torch.manual_seed(cfg.seed)  # the LoRA initialisation
        n_layers = int(model.config.num_hidden_layers)
        if cfg.layers is not None and cfg.layers > n_layers:
            raise ConfigError(f"TrainConfig.layers={cfg.layers} but the model has {n_layers} layers")
        top = None if cfg.layers is None else list(range(n_layers - cfg.layers, n_layers))
        # peft takes a layer subset only with named modules: a Llama block's seven linear layers
        targets = "all-linear" if top is None else LLAMA_LINEAR
        lora = peft.LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                               target_modules=targets, bias="none", task_type="CAUSAL_LM",
                               layers_to_transform=top)
        with warnings.catch_warnings():  # peft calls a transformers method that transformers deprecated
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*is_gradient_checkpointing")
            model = peft.get_peft_model(model, lora).to(device)
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        for p in named.values():
            p.data = p.data.float()  # the adapter trains in float32 even over a bfloat16 base
        opt = torch.optim.AdamW(list(named.values()), lr=cfg.lr, weight_decay=0.0)

        step, losses, tokens, seconds = 0, [], 0, 0.0
        ckpt = _read_checkpoint(torch, out_dir, device) if resume else None
        if not resume:
            for stale in (out_dir / CHECKPOINT, out_dir / f"{CHECKPOINT}.old"):
                shutil.rmtree(stale, ignore_errors=True)
        if ckpt is not None:
            if ckpt.get("format") != _FORMAT or ckpt.get("fingerprint") != fingerprint:
                raise ConfigError(f"the checkpoint in {out_dir / CHECKPOINT} was made from other data, settings or "
                                  "base model; pass resume=False (or remove it) to start afresh")
            with torch.no_grad():
                for n, p in named.items():
                    p.copy_(ckpt["lora"][n])
            opt.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng"].cpu())
            if device == "cuda" and ckpt.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(ckpt["cuda_rng"].cpu())
            step, losses, tokens, seconds = ckpt["step"], list(ckpt["train_loss"]), ckpt["tokens"], ckpt["seconds"]
            plan.order = [list(o) for o in ckpt["order"]]

        def save_checkpoint() -> None:
            tmp = out_dir / f".{CHECKPOINT}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            torch.save({"format": _FORMAT, "fingerprint": fingerprint, "step": step, "train_loss": losses,
                        "tokens": tokens, "seconds": seconds, "order": plan.order,
                        "lora": {n: p.detach().cpu() for n, p in named.items()}, "optimizer": opt.state_dict(),
                        "rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state() if device == "cuda" else None}, tmp / _STATE)
            _swap_in(tmp, out_dir / CHECKPOINT)

        model.train()
        started, at_start, stepped = time.perf_counter(), seconds, False
        while step < plan.total and (cfg.max_seconds is None or seconds < cfg.max_seconds):
            batch = [rows[i] for i in plan.examples(step)]
            labelled = sum(1 for r in batch for lab in r[1][1:] if lab != IGNORE)
            for group in opt.param_groups:
                group["lr"] = plan.lr(cfg.lr, step)
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for i in range(0, len(batch), cfg.batch_size):
                loss, n_tokens = _loss_sum(torch, model, batch[i:i + cfg.batch_size], pad, device)
                (loss / labelled).backward()
                step_loss += loss.item() / labelled
                tokens += n_tokens
            torch.nn.utils.clip_grad_norm_(list(named.values()), 1.0)
            opt.step()
            step += 1
            stepped = True
            losses.append(step_loss)
            seconds = at_start + time.perf_counter() - started
            if step % cfg.checkpoint_every == 0 and step < plan.total:
                save_checkpoint()
            if progress is not None:
                progress(step, plan.total, step_loss)
        if stepped or ckpt is None:
            save_checkpoint()
        stopped = ("done" if step >= plan.planned else "max_steps" if step >= plan.total else "max_seconds")
        val_loss = _val_loss(torch, model, val_rows, cfg.batch_size, pad, device)

        adapter_dir = out_dir / ADAPTER
        tmp = out_dir / f".{ADAPTER}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(str(tmp))
        result = TrainResult(steps=step, epochs_done=min(step * plan.per_step, plan.limit) / len(rows),
                             train_loss=losses, val_loss=val_loss, seconds=seconds, tokens=tokens,
                             peak_rss_mb=_peak_rss_mb(), stopped=stopped, adapter_dir=adapter_dir,
                             dropped=len(encoded) - len(rows), device=device)
        record = {k: v for k, v in asdict(result).items() if k not in ("adapter_dir", "peak_rss_mb")}
        (tmp / TRAINING_FILE).write_text(json.dumps({"base_file": base_gguf.name, "base_sha256": digest,
                                                     "config": asdict(cfg), **record}, indent=2))
        _swap_in(tmp, adapter_dir)
    return result
