"""Streaming a generated answer without showing anything unchecked: sentence by sentence.

The citation check (:func:`~bastion.generation.citations.check_answer`) judges each sentence on its
own: a sentence that cites a passage holding most of its terms and all of its numbers keeps that
citation whatever follows. A sentence without a valid citation of its own is supported when the
passages the answer cites hold it, and that set only grows as the answer goes on. So a sentence
that passes on the answer so far passes on the whole answer.

:class:`CheckedStream` is an ``on_token`` sink for :meth:`Answerer.ask
<bastion.generation.answer.Answerer.ask>`: the answerer hands it the numbered passages the model
sees (:meth:`CheckedStream.begin`), it collects the draft, and it releases each finished sentence,
in order, once that sentence passes: a sentence that fails holds back itself and all after it.
When the checked answer exists, :meth:`CheckedStream.finish` says what is left to send: the rest of
the answer, or, when the answer fell back to quotes or abstained after sentences went out, a notice
that says so followed by the answer.

>>> out = []
>>> stream = CheckedStream(out.append)
>>> stream.begin({1: "Hotel costs are capped at EUR 180 per night."}, 0.5)
>>> for token in "Hotels are capped at EUR 180 [1]. Trains are free [1]. More".split(" "):
...     stream(token + " ")
>>> out
['Hotels are capped at EUR 180. [1]']
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bastion.chunking.chunker import split_sentences
from bastion.generation.citations import _ONLY_CITES, Claim, check_answer

if TYPE_CHECKING:
    from bastion.generation.results import Answer

# what a stream says when sentences went out and the answer then changed course (by answer language)
NOTICES = {
    "extracted": {"en": "The rest of the model's answer could not be checked against the sources, so it is not "
                        "shown; the sentences above passed the citation check. Quoted from the documents:",
                  "zh": "模型回答的其余部分无法依据资料核实，因此未显示；以上句子已通过引用检查。以下为文档原文摘录："},
    "abstained": {"en": "The rest of the model's answer could not be checked against the sources, so it is not "
                        "shown; the sentences above passed the citation check.",
                  "zh": "模型回答的其余部分无法依据资料核实，因此未显示；以上句子已通过引用检查。"},
    "answered": {"en": "The checked answer in full:", "zh": "经检查的完整回答："},
}


class CheckedStream:
    """Releases a streamed draft sentence by sentence, each once it passed the citation check.

    Until :meth:`begin` is called (no model is prompted: quotes, abstentions, cached answers)
    nothing is released before the end.

    Args:
        emit: Receives each released piece of text, in order (the first without a leading space).
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._passages: dict[int, str] | None = None
        self._min_support = 0.5
        self._draft = ""
        self._checked_upto = 0
        self.sent: list[str] = []  # the released sentences, as the checked answer renders them
        self.superseded = False  # finish() had to follow the released sentences with a notice

    def begin(self, passages: dict[int, str], min_support: float) -> None:
        """The passages the model is shown (number -> text) and ``answer.min_support``."""
        self._passages = dict(passages)
        self._min_support = min_support
        self._draft = ""
        self._checked_upto = 0

    def __call__(self, token: str) -> None:
        self._draft += token
        if self._passages is None:
            return
        prefix = _complete(self._draft)
        if len(prefix) <= self._checked_upto:
            return
        self._checked_upto = len(prefix)
        claims = [c for c in check_answer(prefix, self._passages, min_support=self._min_support).claims if c.text]
        for claim in claims[len(self.sent):]:
            if not claim.supported:
                break  # the answer is read in order: nothing after a held-back sentence goes out before it
            text = _render(claim)
            self._emit(text if not self.sent else " " + text)
            self.sent.append(text)

    def finish(self, answer: Answer) -> str:
        """What is left to send of ``answer`` (the checked answer) after the released sentences."""
        sent = " ".join(self.sent)
        if not sent:
            return answer.answer
        if answer.decision == "answered" and answer.answer.startswith(sent):
            return answer.answer[len(sent):]
        self.superseded = True
        notices = NOTICES.get(answer.decision, NOTICES["answered"])
        notice = notices.get(answer.language, notices["en"])
        return f"\n\n{notice}\n\n{answer.answer}"


def _complete(draft: str) -> str:
    """The draft up to the start of its last sentence with words in it: that one may still grow or gain
    citations (sentence ends are whitespace after punctuation, so later text cannot move an earlier one)."""
    spans = split_sentences(draft)
    for a, b in reversed(spans):
        if not _ONLY_CITES.match(draft[a:b]):
            return draft[:a]
    return ""


def _render(claim: Claim) -> str:
    """A sentence as the checked answer writes it: its text, then its valid citations."""
    cites = "".join(f"[{n}]" for n in claim.cited)
    return f"{claim.text} {cites}".strip() if cites else claim.text.strip()


__all__ = ["NOTICES", "CheckedStream"]
