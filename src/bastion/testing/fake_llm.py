"""A scripted LLM for fast tests of the answering path. Never selected by configuration."""
from __future__ import annotations

from collections.abc import Callable

from bastion.core.errors import GenerationError
from bastion.generation.protocol import ChatMessage, DecodingParams, Generation, OnToken

Script = Callable[[list[ChatMessage]], str]


class ScriptedLLM:
    """Answers with ``script(messages)`` (or a fixed string); records every call.

    Tokens are whitespace-separated words, so budgets are easy to reason about in tests.
    ``fail`` makes every call raise, as a dead server would.
    """

    sha256 = "0" * 64

    def __init__(self, script: Script | str = "", *, context_window: int = 2048, fail: Exception | None = None,
                 model_id: str = "scripted"):
        self._script = script if callable(script) else (lambda _m, s=script: s)
        self.context_window = context_window
        self.id = model_id
        self.fail = fail
        self.calls: list[tuple[list[ChatMessage], DecodingParams]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def generate(self, messages: list[ChatMessage], params: DecodingParams,
                 on_token: OnToken | None = None) -> Generation:
        self.calls.append((list(messages), params))
        if self.fail is not None:
            raise self.fail if isinstance(self.fail, GenerationError) else GenerationError(str(self.fail))
        text = self._script(messages)
        if on_token:
            for i, word in enumerate(text.split(" ")):
                on_token(word if i == 0 else " " + word)
        prompt = sum(self.count_tokens(m.content) for m in messages)
        return Generation(text=text, model_id=self.id, prompt_tokens=prompt, completion_tokens=len(text.split()),
                          finish_reason="stop", first_token_s=0.001, total_s=0.002)

    def close(self) -> None:
        pass
