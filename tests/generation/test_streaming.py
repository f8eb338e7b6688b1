"""Streaming sentence by sentence: a sentence goes out only once it passed the citation check,
in order, and what the check of the whole answer decides afterwards never contradicts it."""
from __future__ import annotations

from bastion.generation.citations import check_answer
from bastion.generation.results import Answer
from bastion.generation.streaming import CheckedStream

PASSAGES = {1: "Q3 2026 revenue was EUR 48.2 million, up 9 percent.",
            2: "Hotel costs are capped at EUR 180 per night in Europe."}


def _feed(draft: str, tokens: list[str] | None = None, passages=PASSAGES) -> tuple[CheckedStream, list[str]]:
    out: list[str] = []
    stream = CheckedStream(out.append)
    stream.begin(passages, 0.5)
    for token in tokens or [w if i == 0 else " " + w for i, w in enumerate(draft.split(" "))]:
        stream(token)
    return stream, out


def _answer(text: str, decision: str = "answered", language: str = "en") -> Answer:
    return Answer(answer=text, abstained=decision == "abstained", decision=decision, reason=None, citations=[],
                  lineage_id="0" * 32, question="q", rewritten_question=None, language=language, mode="answer",
                  grounded=decision != "abstained")


def test_each_supported_sentence_goes_out_once_the_next_begins_and_the_rest_comes_at_the_end():
    draft = "Q3 revenue was EUR 48.2 million [1]. Hotels cost at most EUR 180 per night [2]."
    stream, out = _feed(draft)
    assert out == ["Q3 revenue was EUR 48.2 million. [1]"]  # the last sentence may still gain citations
    final = check_answer(draft, PASSAGES).text
    assert "".join(out) + stream.finish(_answer(final)) == final and not stream.superseded


def test_an_unsupported_sentence_holds_back_itself_and_everything_after_it():
    draft = "Q3 revenue was EUR 48.2 million [1]. Trains are free for everyone [2]. Hotels cost EUR 180 [2]. Yes."
    stream, out = _feed(draft)
    assert out == ["Q3 revenue was EUR 48.2 million. [1]"]
    rest = stream.finish(_answer("“Q3 2026 revenue was EUR 48.2 million, up 9 percent.” [1]", "extracted"))
    assert stream.superseded and rest.startswith("\n\nThe rest of the model's answer could not be checked")
    assert rest.endswith("“Q3 2026 revenue was EUR 48.2 million, up 9 percent.” [1]")


def test_a_number_cut_at_its_decimal_point_is_not_taken_for_a_sentence_end():
    tokens = ["Revenue was EUR 48.", "2 million [1]", ". Hotels", " cost EUR 180 [2]."]
    stream, out = _feed("", tokens)
    assert out == ["Revenue was EUR 48.2 million. [1]"]


def test_citations_written_after_the_full_stop_still_belong_to_the_sentence():
    out: list[str] = []
    stream = CheckedStream(out.append)
    stream.begin(PASSAGES, 0.5)
    stream("Revenue was EUR 48.2 million.")
    stream(" ")
    assert out == []  # without a citation yet: held
    stream("[1]")
    stream("\nHotels cost EUR 180 [2].")
    assert out == ["Revenue was EUR 48.2 million. [1]"]


def test_a_sentence_citing_nothing_waits_until_a_cited_source_backs_it():
    stream, out = _feed("Revenue rose 9 percent. It was EUR 48.2 million [1]. Hotels cost EUR 180 [2].")
    assert out == ["Revenue rose 9 percent.", " It was EUR 48.2 million. [1]"]


def test_without_passages_nothing_goes_out_before_the_checked_answer():
    out: list[str] = []
    stream = CheckedStream(out.append)  # a cached answer, quotes or an abstention: no model was prompted
    stream("Q3 revenue was EUR 48.2 million [1]. More text.")
    assert out == [] and stream.finish(_answer("cached [1]")) == "cached [1]"


def test_chinese_sentences_stream_too_and_the_notice_speaks_chinese():
    passages = {1: "住宿费用每晚不超过 180 欧元。"}
    stream, out = _feed("", ["住宿费用每晚不超过 180 欧元 [1]。", "火车免费 [1]。"], passages)
    assert out == ["住宿费用每晚不超过 180 欧元。 [1]"]
    assert "无法依据资料核实" in stream.finish(_answer("住宿费用每晚不超过 180 欧元。", "abstained", "zh"))
