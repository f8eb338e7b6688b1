"""``Workspace.tuning``: datasets, LoRA training runs, the closed-loop evaluation and promotion.

A run trains on a stored dataset (:mod:`bastion.tuning.datasets`), whose every example was
admitted for the dataset's audience; the examples are checked against the audience again before
training (the files could have been edited), the adapter is exported as a llama.cpp LoRA GGUF,
registered with that audience as a candidate, and evaluated against the base model
(:mod:`bastion.tuning.loop`). It serves only once promoted.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.core.errors import ConfigError
from bastion.tuning.datasets import TuneDatasets
from bastion.tuning.guard import example_admitted

if TYPE_CHECKING:
    from collections.abc import Callable

    from bastion.evaluation.runner import Progress
    from bastion.tuning.train import TrainConfig
    from bastion.workspace import Workspace


class Tuning:
    def __init__(self, ws: Workspace):
        self.ws = ws
        self.datasets = TuneDatasets(ws)

    def run(self, dataset: str, cfg: TrainConfig, *, adapter: str | None = None, base: str | None = None,
            evaluate: bool = True, eval_limit: int | None = None,
            progress: Callable[[int, int, float], None] | None = None,
            eval_progress: Progress | None = None) -> dict[str, Any]:
        """Train an adapter on ``dataset``; returns ``adapter``, ``audience``, ``steps``, ``sha256`` and more."""
        from bastion.tuning.export import export_lora_gguf
        from bastion.tuning.train import ChatExample, train_lora

        card = self.datasets.get(dataset)
        if not self.datasets.verify(dataset):
            raise ConfigError(f"dataset {dataset!r} changed on disk since it was built (its sha256 differs); build it again")
        train = self.datasets.examples(dataset, "train")
        val = self.datasets.examples(dataset, "val")
        outside = [e for e in train + val if not example_admitted(e, card.audience)]
        if outside:
            raise ConfigError(f"{len(outside)} example(s) of {dataset!r} quote documents its audience "
                              f"({', '.join(card.audience)}) may not read; refusing to train")
        base = base or self.ws.config.llm.model
        info = self.ws.models.get(base)
        if info.kind != "gguf" or not info.path:
            raise ConfigError(f"model {base!r} is served over HTTP: train an adapter of a local GGUF model here, "
                              "and load adapters into your server (e.g. vLLM's --lora-modules); see docs/tuning.md")
        base_file = Path(info.path)
        name = adapter or self._next_name(dataset)
        if name in {a.name for a in self.ws.adapters.all()}:
            raise ConfigError(f"an adapter named {name!r} exists; choose another --adapter name")
        run_dir = self.ws.data_dir / "tuning" / "runs" / name
        result = train_lora(base_file, [ChatExample(e.messages) for e in train], run_dir, cfg,
                            val=[ChatExample(e.messages) for e in val], progress=progress, resume=True)
        gguf = run_dir / f"{name}.gguf"
        export_lora_gguf(result.adapter_dir, base_file, gguf)
        training = {"config": asdict(cfg), "steps": result.steps, "epochs": result.epochs_done,
                    "train_loss_first": result.train_loss[:1], "train_loss_last": result.train_loss[-1:],
                    "val_loss": result.val_loss, "seconds": round(result.seconds, 1), "tokens": result.tokens,
                    "peak_rss_mb": result.peak_rss_mb, "stopped": result.stopped, "device": result.device,
                    "dropped_too_long": result.dropped, "dataset_sha256": card.lineage.get("sha256"),
                    "examples": {"train": len(train), "val": len(val)}}
        registered = self.ws.adapters.register(name, base, gguf, audience=card.audience, dataset=dataset,
                                               documents=card.documents, training=training)
        out: dict[str, Any] = {"adapter": registered.name, "audience": registered.audience, "steps": result.steps,
                               "sha256": registered.sha256, "base_model": base, "dataset": dataset,
                               "status": registered.status, "training": training, "evaluation": None}
        if evaluate:
            from bastion.tuning.loop import evaluate as run_evaluation

            out["evaluation"] = run_evaluation(self.ws, registered, val, limit=eval_limit, progress=eval_progress)
        return out

    def _next_name(self, dataset: str) -> str:
        taken = {a.name for a in self.ws.adapters.all()}
        n = 1
        while f"{dataset}-{n}" in taken:
            n += 1
        return f"{dataset}-{n}"

    def promote(self, adapter: str, *, tolerance: float = 0.02, force: bool = False, by: str | None = None,
                eval_limit: int | None = None) -> dict[str, Any]:
        """Make ``adapter`` serve its audience if it beats the base model on its held-out set and
        forgets no more than ``tolerance`` of what the base model knew; ``force`` overrides."""
        from bastion.tuning.loop import decide
        from bastion.tuning.loop import evaluate as run_evaluation

        a = self.ws.adapters.get(adapter)
        evaluation = a.evaluation
        if not evaluation and a.dataset:
            evaluation = run_evaluation(self.ws, a, self.datasets.examples(a.dataset, "val"), limit=eval_limit)
        reasons = decide(evaluation or {}, tolerance)
        decision: dict[str, Any] = {"adapter": adapter, "audience": a.audience, "tolerance": tolerance,
                                    "reasons": reasons, "forced": bool(reasons) and force, "promoted": False}
        if reasons and not force:
            return decision
        decision.update(self.ws.adapters.promote(adapter, by), promoted=True)
        return decision


__all__ = ["Tuning"]
