"""What an evaluation's answers depend on, as one digest: when it changes (a new model file, an
edited prompt template, other answer or retrieval settings, another embedder), pinned
regression sets are due again."""
from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from bastion.core.errors import BastionError
from bastion.evaluation.configs import EvalConfig

if TYPE_CHECKING:
    from bastion.workspace import Workspace


def fingerprint_material(ws: Workspace, spec: EvalConfig) -> dict[str, Any]:
    """The inputs that decide a configuration's answers (``spec`` resolved against the workspace)."""
    from bastion.generation.prompting import load_template

    resolved = spec.resolve(ws.config)
    a, c, s = ws.config.answer, ws.config.llm, ws.config.search
    model: dict[str, Any] = {"name": resolved.model}
    if resolved.approach != "extract":
        try:
            info = ws.models.get(resolved.model or c.model)
            model.update(sha256=info.sha256, url=info.url, served_name=info.served_name)
        except BastionError:
            model["missing"] = True
    try:
        template = load_template(resolved.prompt or a.prompt, a.prompt_dir, a.few_shot_file, base=ws.home)
        prompt: dict[str, Any] = {"ref": template.ref, "digest": template.digest}
    except BastionError:
        prompt = {"missing": resolved.prompt}
    return {
        "spec": resolved.to_dict(), "model": model, "prompt": prompt,
        "answer": {k: getattr(a, k) for k in ("min_evidence_zh", "min_support", "max_quotes", "passage_tokens")},
        "llm": {k: getattr(c, k) for k in ("temperature", "seed", "max_tokens", "repeat_penalty", "grammar")},
        "search": {k: getattr(s, k) for k in ("candidates", "rrf_k", "bm25_weight")},
        # adapters in service change what askers of their audience get (a promotion, a rollback, a withdrawal)
        "adapters": sorted([a.name, a.sha256] for a in ws.adapters.all() if a.status == "active"),
        "embedder": ({k: getattr(ws.config.embedder, k) for k in ("backend", "model", "url", "dimension")}
                     if not ws.embedder_injected else ws.embedder.id),
    }


def fingerprint(ws: Workspace, spec: EvalConfig) -> str:
    material = fingerprint_material(ws, spec)
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


__all__ = ["fingerprint", "fingerprint_material"]
