"""An optional LLM judge: a second model, through any OpenAI-compatible URL, says whether an
answer is correct given the reference answers. Off unless ``--judge-url`` is given; its verdict
is reported beside the string metrics, never instead of them."""
from __future__ import annotations

import re

from bastion.core.errors import BastionError
from bastion.evaluation.items import EvalItem
from bastion.generation.openai_http import OpenAIChatLLM
from bastion.generation.protocol import ChatMessage, DecodingParams

SYSTEM = ("You grade answers. Reply with one digit: 1 if the candidate answer states the same fact as one of the "
          "reference answers (wording may differ), 0 if it is wrong, contradicts them or does not answer.")


class Judge:
    def __init__(self, url: str, model: str, *, api_key_env: str | None = None, timeout_s: float = 60.0):
        self.llm = OpenAIChatLLM(url, model, api_key_env=api_key_env, timeout_s=timeout_s, retries=1)

    def verdict(self, item: EvalItem, answer: str) -> float | None:
        """1.0 correct, 0.0 wrong, None when the judge failed or answered something else."""
        prompt = (f"Question: {item.question}\nReference answers: {' | '.join(item.answers)}\n"
                  f"Candidate answer: {answer}\nGrade (1 or 0):")
        try:
            gen = self.llm.generate([ChatMessage("system", SYSTEM), ChatMessage("user", prompt)],
                                    DecodingParams(temperature=0.0, seed=0, max_tokens=4))
        except BastionError:
            return None
        m = re.search(r"[01]", gen.text)
        return float(m.group()) if m else None

    def close(self) -> None:
        self.llm.close()


__all__ = ["Judge"]
