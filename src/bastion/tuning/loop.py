"""The closed loop: every adapter is evaluated against its base model before it may serve.

- **Held-out set**: the dataset's validation split (documents never trained on) as a question
  set, asked as a user of the adapter's audience with retrieval (``answer``), once with the base
  model and once with the adapter.
- **Forgetting set**: general questions, asked with no sources (``prompt-only``); what matters
  is the share of the questions the base model got right that the adapter still gets right.

Promotion (:func:`decide`) needs the adapter better on the held-out set (a higher groundedness,
contains or F1, and no pinned metric worse beyond the tolerance), no leak, and the forgetting set
retained within the tolerance.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from bastion.catalog.models import UserRow
from bastion.core.errors import ConfigError
from bastion.evaluation.configs import EvalConfig
from bastion.evaluation.items import EvalItem
from bastion.evaluation.metrics import contains
from bastion.tuning.guard import admits

if TYPE_CHECKING:
    from bastion.evaluation.runner import Progress
    from bastion.tuning.adapters import Adapter
    from bastion.tuning.data import Example
    from bastion.workspace import Workspace

FORGETTING_SET = "tune-forgetting"
# general questions a base model may know; only those it gets right are held against the adapter
FORGETTING: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("What is the capital of France?", ("Paris",)),
    ("What is the capital of Japan?", ("Tokyo",)),
    ("What is the capital of Germany?", ("Berlin",)),
    ("What is the capital of Italy?", ("Rome",)),
    ("How many days are there in a week?", ("seven", "7")),
    ("How many legs does a spider have?", ("eight", "8")),
    ("What colour is the sky on a clear day?", ("blue",)),
    ("What is the chemical symbol for water?", ("H2O",)),
    ("What is the largest planet in the solar system?", ("Jupiter",)),
    ("Which gas do plants absorb from the air?", ("carbon dioxide", "CO2")),
    ("What is 2 plus 2?", ("4", "four")),
    ("Who wrote Romeo and Juliet?", ("Shakespeare",)),
    ("What is the freezing point of water in degrees Celsius?", ("0", "zero")),
    ("What language is spoken in Spain?", ("Spanish",)),
    ("中国的首都是哪里？", ("北京",)),
    ("一年有多少个月？", ("12", "十二")),
    ("水的化学式是什么？", ("H2O",)),
    ("太阳从哪个方向升起？", ("东",)),
)
HELDOUT_METRICS = ("contains", "f1", "citation_accuracy", "abstention_recall_unanswerable")
BETTER_ON = ("groundedness", "contains", "f1")


def pick_asker(ws: Workspace, audience: Sequence[str]) -> str:
    """A user the audience admits (the first by id), to ask the held-out questions as."""
    with ws.catalog.session() as s:
        users = list(s.scalars(select(UserRow.id).order_by(UserRow.id)))
    for user in users:
        if admits(audience, ws.principal(user)):
            return user
    raise ConfigError(f"no user belongs to the audience {', '.join(audience)}; add one to evaluate the adapter")


def heldout_items(examples: Sequence[Example]) -> list[EvalItem]:
    """The validation examples as questions: grounded ones answerable from their gold document,
    abstentions unanswerable."""
    items, seen = [], set()
    for ex in examples:
        question = str(ex.meta.get("question") or "")
        if not question or question in seen:
            continue
        seen.add(question)
        if ex.kind == "grounded":
            answer = ex.meta.get("answer")
            gold = next((d["path"] for d in ex.documents if d.get("doc_id") == ex.group), None)
            items.append(EvalItem(question=question, answers=[str(answer)] if answer else [], document=gold))
        elif ex.kind == "abstain":
            items.append(EvalItem(question=question, kind="unanswerable"))
    return items


def evaluate(ws: Workspace, adapter: Adapter, val: Sequence[Example], *, limit: int | None = None,
             progress: Progress | None = None) -> dict[str, Any]:
    """Before / after runs of the held-out and forgetting sets; stored with the adapter."""
    asker = pick_asker(ws, adapter.audience)
    result: dict[str, Any] = {"asker": asker}
    items = heldout_items(val)
    if items:
        held = ws.evaluation.import_items(f"tune-{adapter.name}-heldout", items, asker=asker,
                                          description=f"held-out questions of adapter {adapter.name}")
        run = ws.evaluation.run(held.eval_set.ref, [("base", EvalConfig(approach="answer", adapter="none")),
                                                    ("adapter", EvalConfig(approach="answer", adapter=adapter.name))],
                                trigger=f"tune:{adapter.name}", started_by="tune", repeat=0, limit=limit,
                                progress=progress)
        result["heldout"] = {"run_id": run["run_id"], "set": held.eval_set.ref,
                             "base": run["configs"][0]["metrics"], "adapter": run["configs"][1]["metrics"]}
    else:
        result["heldout"] = None
    result["forgetting"] = forgetting(ws, adapter, asker, limit=limit, progress=progress)
    ws.adapters.set_evaluation(adapter.name, result)
    return result


def forgetting(ws: Workspace, adapter: Adapter, asker: str, *, limit: int | None = None,
               progress: Progress | None = None) -> dict[str, Any]:
    items = [EvalItem(question=q, answers=list(a)) for q, a in FORGETTING]
    try:
        ref = ws.evaluation.sets.get(FORGETTING_SET).ref
    except ConfigError:
        ref = ws.evaluation.import_items(FORGETTING_SET, items, acl="everyone",
                                         description="general questions: what tuning must not make the model forget"
                                         ).eval_set.ref
    run = ws.evaluation.run(ref, [("base", EvalConfig(approach="prompt-only", adapter="none")),
                                  ("adapter", EvalConfig(approach="prompt-only", adapter=adapter.name))],
                            asker=asker, trigger=f"tune:{adapter.name}", started_by="tune", repeat=0, limit=limit,
                            progress=progress)
    base, tuned = (c["items"] for c in run["configs"])
    right = [i for i, o in enumerate(base) if contains(o["answer"], o["item"]["answers"]) == 1.0]
    kept = [i for i in right if contains(tuned[i]["answer"], tuned[i]["item"]["answers"]) == 1.0]
    return {"run_id": run["run_id"], "base_correct": len(right), "retained": len(kept),
            "retention": round(len(kept) / len(right), 4) if right else None}


def decide(evaluation: dict[str, Any], tolerance: float) -> list[str]:
    """Why the adapter must not be promoted (empty: it may be)."""
    reasons = []
    held = evaluation.get("heldout")
    if not held:
        reasons.append("no held-out evaluation (the dataset has no validation examples)")
    else:
        base, tuned = held["base"], held["adapter"]
        if tuned.get("leaks"):
            reasons.append(f"the adapter leaked on {tuned['leaks']} held-out item(s)")
        gains = [m for m in BETTER_ON if tuned.get(m) is not None and base.get(m) is not None and tuned[m] > base[m]]
        if not gains:
            reasons.append("not better than the base model on the held-out set (" + ", ".join(
                f"{m} {base.get(m)} → {tuned.get(m)}" for m in BETTER_ON) + ")")
        for m in HELDOUT_METRICS:
            if tuned.get(m) is not None and base.get(m) is not None and base[m] - tuned[m] > tolerance:
                reasons.append(f"held-out {m} dropped {base[m]} → {tuned[m]} (tolerance {tolerance})")
    forget = evaluation.get("forgetting") or {}
    if forget.get("retention") is not None and 1 - forget["retention"] > tolerance:
        reasons.append(f"forgot general knowledge: {forget['retained']} of the {forget['base_correct']} questions "
                       "the base model answered right are still right")
    return reasons


__all__ = ["FORGETTING", "FORGETTING_SET", "decide", "evaluate", "heldout_items", "pick_asker"]
