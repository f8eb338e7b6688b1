"""The LLM plugin boundary: chat messages in, streamed text out, token counts, model id."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]
OnToken = Callable[[str], None]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class DecodingParams:
    """Deterministic by default: greedy decoding with a fixed seed."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 42
    max_tokens: int = 256
    # > 1 discourages the loops small models fall into (still deterministic)
    repeat_penalty: float = 1.0
    # a GBNF grammar constraining the output (llama.cpp); backends that cannot honour it ignore it
    grammar: str | None = None
    stop: tuple[str, ...] = ()

    def to_record(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "seed": self.seed,
                "max_tokens": self.max_tokens,
                "repeat_penalty": self.repeat_penalty, "grammar": bool(self.grammar), "stop": list(self.stop)}


@dataclass
class Generation:
    """What one call produced, with the counts and timings lineage records."""

    text: str
    model_id: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    first_token_s: float | None = None
    total_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LLM(Protocol):
    """A chat model.

    ``id`` names the model precisely enough to reproduce an answer (for a local file: its name
    and sha256). ``context_window`` is how many tokens prompt + answer may take.
    """

    id: str
    context_window: int
    sha256: str | None

    def generate(self, messages: list[ChatMessage], params: DecodingParams,
                 on_token: OnToken | None = None) -> Generation:
        """Run one chat completion; call ``on_token`` with each text delta while streaming."""
        ...

    def count_tokens(self, text: str) -> int:
        """How many of this model's tokens ``text`` takes."""
        ...

    def close(self) -> None:
        ...


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate when no tokenizer is reachable: one token per CJK
    character, one per three other characters."""
    cjk = sum(1 for ch in text if "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff")
    return cjk + (len(text) - cjk + 2) // 3
