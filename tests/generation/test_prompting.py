"""Prompt building: numbered sources, language following, the context budget."""
import pytest

from bastion.core.errors import ConfigError
from bastion.generation.prompting import Passage, detect_language, load_template, trim_passage


def test_language_follows_the_question():
    assert detect_language("What is the hotel cap in Shanghai?") == "en"
    assert detect_language("上海出差住宿标准是多少？") == "zh"
    assert detect_language("Q3 2026 的营收是多少") == "zh"


def test_builtin_template_numbers_sources_and_states_the_rules():
    t = load_template("grounded-qa")
    msgs = t.messages("What is the cap?", [Passage(1, "travel", "Cap is 800."), Passage(2, "hr", "Leave is 25 days.")], "en")
    assert msgs[0].role == "system" and "[1]" in msgs[0].content and "NOT_IN_SOURCES" in msgs[0].content
    assert "[1] travel: Cap is 800." in msgs[-1].content and "[2] hr: Leave is 25 days." in msgs[-1].content
    assert msgs[-1].content.endswith("Question: What is the cap?")
    assert t.ref == "grounded-qa@1" and len(t.digest) == 64


def test_chinese_question_gets_chinese_instructions():
    t = load_template("grounded-qa")
    msgs = t.messages("住宿标准？", [Passage(1, "差旅", "每晚800元。")], "zh")
    assert "只能根据" in msgs[0].content and "用中文回答" in msgs[0].content
    assert "问题：住宿标准？" in msgs[-1].content


def test_few_shot_examples_come_from_a_file(tmp_path):
    shots = tmp_path / "shots.json"
    shots.write_text('[{"question": "Q?", "sources": ["S one."], "answer": "A [1]."}]', encoding="utf-8")
    t = load_template("grounded-qa", few_shot_file=shots)
    msgs = t.messages("Real question?", [Passage(1, "d", "text")], "en")
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[2].content == "A [1]."
    assert t.digest != load_template("grounded-qa").digest  # the examples are part of the prompt's identity


def test_workspace_template_overrides_and_bad_templates_are_named(tmp_path):
    folder = tmp_path / "prompts" / "mine"
    folder.mkdir(parents=True)
    (folder / "template.toml").write_text('id = "mine"\nversion = "7"\n')
    (folder / "system.j2").write_text("Be brief. {{ not_found }}")
    (folder / "user.j2").write_text("{% for p in passages %}[{{p.n}}] {{p.text}}\n{% endfor %}{{ question }}")
    (folder / "rewrite.j2").write_text("{{ question }}")
    t = load_template("mine", "prompts", base=tmp_path)
    assert t.ref == "mine@7"
    (folder / "user.j2").write_text("{{ undefined_variable }}")
    with pytest.raises(ConfigError, match="undefined_variable"):
        load_template("mine", "prompts", base=tmp_path).messages("q", [], "en")
    with pytest.raises(ConfigError, match="no such template"):
        load_template("missing", "prompts", base=tmp_path)


def test_long_passage_is_trimmed_to_its_most_relevant_sentences():
    filler = " ".join(f"Sentence number {i} talks about office plants and parking." for i in range(40))
    text = filler + " The hotel cap in Shanghai is 800 CNY per night. " + filler
    words = lambda s: len(s.split())  # noqa: E731
    out = trim_passage(text, {"hotel", "cap", "shanghai"}, 40, words)
    assert "800 CNY" in out and words(out) <= 40 and len(out) < len(text) / 5
