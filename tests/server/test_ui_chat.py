"""The chat page as an employee uses it, in a real headless Chromium against a live server: chats saved
per user and listed after a reload, reopened, renamed and deleted; plain words when there is no answer;
the assistant picker; a quote found in two sources shown once with both."""
from __future__ import annotations

import json
import re

from tests.server.conftest import ADMIN_PW, ALICE_PW, auth

# the UI tests' fixtures (pytest finds them by these names); the tests' parameters then shadow them: F811
from tests.server.test_ui import (  # noqa: F401
    ANSWER_TIMEOUT_MS,
    ask,
    browser,
    configured,
    expect,
    login,
    no_horizontal_overflow,
    pages,
    site,
)

Q1, Q2, Q3 = "What was the Q3 2026 revenue?", "And the hotel cost limit per night in Europe?", "住宿费用每晚不超过多少？"


def conversations_of(served, user: str) -> list[dict]:
    return [c.to_dict() for c in served.ws.conversations.list(user)]


def test_chats_are_saved_reopened_renamed_and_deleted(site, pages, served):  # noqa: F811 - fixtures
    import httpx

    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    expect(page.locator("#conv-status")).to_have_text("No saved chats yet. Your questions and answers are kept here.")
    expect(page.locator("#chat-title")).to_have_text("New chat")

    # the first question starts a saved chat, titled after it; a follow-up goes into the same chat
    ask(page, Q1)
    items = page.locator("#conv-list .conv-item")
    expect(items).to_have_count(1)
    expect(items.first.locator(".conv-title")).to_have_text(Q1)
    expect(page.locator("#chat-title")).to_have_text(Q1)
    [saved] = conversations_of(served, "alice")
    assert page.evaluate("location.hash") == f"#chat/{saved['id']}"
    ask(page, Q2)
    expect(items.first.locator(".conv-when")).to_contain_text("2 questions")
    expect(items.first).to_have_attribute("class", re.compile(r"\bcurrent\b"))

    # a new chat: an empty screen, then a second saved chat on top of the list
    page.click("#new-chat")
    expect(page.locator("#chat-title")).to_have_text("New chat")
    expect(page.locator(".turn-answer")).to_have_count(0)
    expect(page.locator("#chat-empty")).to_be_visible()
    ask(page, Q3)
    expect(items).to_have_count(2)
    expect(items.first.locator(".conv-title")).to_have_text(Q3)

    # after a reload both are listed and the open one is shown again
    page.reload()
    expect(items).to_have_count(2)
    expect(page.locator(".turn-question")).to_have_text([Q3])
    expect(page.locator(".turn-answer .answer-text")).to_contain_text("180")

    # reopen the first: its two turns with their citations, which still open the passage
    page.locator("#conv-list .conv-link", has_text=Q1).click()
    expect(page.locator("#chat-title")).to_have_text(Q1)
    expect(page.locator(".turn-question")).to_have_text([Q1, Q2])
    first = page.locator(".turn-answer").first
    expect(first.locator(".answer-text")).to_contain_text("EUR 48.2 million")
    first.locator("button.cite").first.click()
    expect(page.locator("#passage-body mark")).to_contain_text("48.2 million")
    page.click("#passage-close")
    # a follow-up in the reopened chat is added to it
    ask(page, "Was revenue up?")
    expect(page.locator("#conv-list .conv-item", has_text=Q1).locator(".conv-when")).to_contain_text("3 questions")

    # rename it
    page.get_by_role("button", name=f"Rename chat: {Q1}").click()
    dialog = page.locator("dialog[open]")
    expect(dialog.get_by_label("Name")).to_have_value(Q1)
    dialog.get_by_label("Name").fill("Q3 numbers")
    dialog.get_by_role("button", name="Rename").click()
    expect(dialog).to_have_count(0)
    expect(page.locator("#chat-title")).to_have_text("Q3 numbers")
    expect(page.locator("#conv-list .conv-title").first).to_have_text("Q3 numbers")
    assert {c["title"] for c in conversations_of(served, "alice")} == {"Q3 numbers", Q3}

    # other users never see alice's chats
    r = httpx.get(f"{site}/api/v1/conversations", headers=auth(served.keys["bob"]))
    assert r.status_code == 200 and r.json()["conversations"] == []

    # delete one: Cancel keeps it, Delete removes it (also after a reload)
    page.get_by_role("button", name=f"Delete chat: {Q3}").click()
    expect(page.locator("dialog[open]")).to_contain_text("will be deleted for good")
    page.locator("dialog[open]").get_by_role("button", name="Cancel").click()
    expect(items).to_have_count(2)
    page.get_by_role("button", name=f"Delete chat: {Q3}").click()
    page.locator("dialog[open]").get_by_role("button", name="Delete chat").click()
    expect(items).to_have_count(1)
    expect(page.locator("#toast")).to_have_text("Chat deleted")
    page.reload()
    expect(items).to_have_count(1)
    expect(items.first.locator(".conv-title")).to_have_text("Q3 numbers")

    # delete all
    page.click("#delete-all-chats")
    expect(page.locator("dialog[open]")).to_contain_text("All 1 saved chat")
    page.locator("dialog[open]").get_by_role("button", name="Delete all").click()
    expect(items).to_have_count(0)
    expect(page.locator("#conv-status")).to_contain_text("No saved chats yet")
    expect(page.locator(".turn-answer")).to_have_count(0)
    assert conversations_of(served, "alice") == []


def test_chat_list_on_a_phone(site, pages):  # noqa: F811 - fixtures
    page = pages.new(390, 844, is_mobile=True, has_touch=True)
    login(page, site, "alice", ALICE_PW)
    ask(page, Q1)
    expect(page.locator("#chat-sidebar")).to_be_hidden()  # folded away behind "Chats"
    page.locator("#chats-toggle").tap()
    side = page.locator("#chat-sidebar")
    expect(side).to_be_visible()
    box = side.bounding_box()
    assert box["x"] == 0 and box["width"] == 390
    assert no_horizontal_overflow(page)
    side.locator("#new-chat").tap()
    expect(side).to_be_hidden()
    expect(page.locator(".turn-answer")).to_have_count(0)
    page.locator("#chats-toggle").tap()
    side.locator(".conv-link", has_text=Q1).tap()
    expect(side).to_be_hidden()
    expect(page.locator(".turn-question")).to_have_text([Q1])
    assert no_horizontal_overflow(page)


def test_plain_words_when_there_is_no_answer(site, pages, served):  # noqa: F811 - fixtures
    """A member is told in plain words, with the reason in plain words too; the admin also gets the
    technical reason (score and setting) folded away."""
    served.ws.config.answer.min_evidence = 2.0  # before the first answer: nothing is evidence enough
    served.ws.config.answer.min_evidence_zh = 2.0
    member = pages.new()
    login(member, site, "alice", ALICE_PW)
    card = ask(member, Q1)
    expect(card).to_have_attribute("data-decision", "abstained")
    expect(card.locator(".abstain-label")).to_have_text("No answer from the sources you can access")
    expect(card.locator(".answer-message")).to_have_text("I couldn't find this in the documents you can access.")
    expect(card.locator(".answer-tip")).to_be_visible()
    why = card.locator("details.why")
    expect(why.locator("summary")).to_have_text("Why?")
    why.locator("summary").click()
    expect(why).to_contain_text("The passages found do not answer this clearly enough")
    shown = card.inner_text()
    for jargon in ("min_evidence", "answer.", "score", "<", "0."):
        assert jargon not in shown, (jargon, shown)
    expect(card.locator(".technical:not(.why)")).to_have_count(0)

    admin = pages.new()
    login(admin, site, "root", ADMIN_PW)
    card = ask(admin, Q1)
    expect(card.locator(".answer-message")).to_have_text("I couldn't find this in the documents you can access.")
    details = card.locator("details.technical")
    expect(details.locator("summary")).to_have_text("Technical details")
    expect(details.locator(".technical-text")).to_be_hidden()  # folded away until opened
    details.locator("summary").click()
    expect(details.locator(".technical-text")).to_contain_text("answer.min_evidence")


def test_quoted_answer_says_so_in_plain_words(site, pages):  # noqa: F811 - fixtures
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    card = ask(page, Q1)
    expect(card).to_have_attribute("data-decision", "extracted")
    expect(card.locator(".extracted-label")).to_have_text(
        "Here are the passages that answer this, quoted from the documents.")
    expect(card.locator("details")).to_have_count(0)  # nothing technical for a member


def test_assistant_picker_sends_the_chosen_assistant(site, pages, served):  # noqa: F811 - fixtures
    from bastion.audit import AuditQuery
    from bastion.core.config import AssistantConfig

    served.ws.config.assistants["hr-helper"] = AssistantConfig(description="HR policies only", sources=["docs"],
                                                               mode="extract")
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    picker = page.get_by_label("Assistant")
    expect(picker).to_be_visible()
    expect(picker.locator("option")).to_have_text(["Standard — The workspace's default model, prompt and sources.",
                                                   "hr-helper — HR policies only"])
    picker.select_option("hr-helper")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/ask") and r.method == "POST") as sent:
        ask(page, "What is the hotel cost limit per night in Europe?")
    assert json.loads(sent.value.post_data)["assistant"] == "hr-helper"
    entries = served.app.state.server.audit.query(AuditQuery(actor="alice", action="ask", limit=10, newest_first=True))
    assert entries[0]["detail"]["assistant"] == "hr-helper"  # the server answered as that assistant

    # the choice is kept for the next visit; the default goes out as itself
    page.reload()
    expect(page.get_by_label("Assistant")).to_have_value("hr-helper")
    page.get_by_label("Assistant").select_option("bastion")
    with page.expect_request(lambda r: r.url.endswith("/api/v1/ask") and r.method == "POST") as sent:
        ask(page, Q1)
    assert json.loads(sent.value.post_data)["assistant"] == "bastion"


def test_picker_hidden_with_one_assistant(site, pages):  # noqa: F811 - fixtures
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    expect(page.locator("#question")).to_be_visible()
    page.wait_for_load_state("networkidle")
    expect(page.locator("#assistant-picker")).to_be_hidden()


def test_identical_quotes_shown_once_with_all_their_sources(site, pages, served, tmp_path):  # noqa: F811
    """The demo indexes one folder twice (two sources): the same quote is shown once, with both sources."""
    import shutil

    copy = tmp_path / "share"
    shutil.copytree(tmp_path / "docs", copy)
    served.ws.sources.add_folder("share", copy, acl="everyone")
    served.ws.sync("share")

    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    card = ask(page, Q1)
    text = card.locator(".answer-text")
    expect(text).to_contain_text("EUR 48.2 million")
    assert text.inner_text().count("48.2 million") == 1  # the quote once
    expect(text.locator("button.cite")).to_have_count(1)
    items = card.locator(".source-list > li")
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("finance/q3.md")
    expect(items.first.locator(".source-also")).to_have_count(1)
    expect(items.first).to_contain_text("The same passage is also in 1 other document")
    sources = {items.first.locator(".source-link").first.inner_text().rsplit("· ", 1)[-1],
               items.first.locator(".source-also").inner_text().rsplit("· ", 1)[-1]}
    assert sources == {"docs", "share"}

    # the viewer names the other copy too, and opens it
    text.locator("button.cite").click()
    expect(page.locator("#passage-body mark")).to_contain_text("48.2 million")
    also = page.locator("#passage-also")
    expect(also).to_contain_text("The same passage is also in:")
    expect(also.locator("button")).to_have_count(1)
    other = also.locator("button").inner_text().rsplit("· ", 1)[-1]
    also.locator("button").click()
    expect(page.locator("#passage-meta")).to_contain_text(f"source {other}")
    expect(page.locator("#passage-body mark")).to_contain_text("48.2 million")


HOSTILE_TITLE = '<img src=x id=pwn-title> chat'


def test_saved_chat_text_stays_text(site, pages, served):  # noqa: F811 - fixtures
    """A chat title and a saved question with markup are shown as typed."""
    page = pages.new()
    login(page, site, "alice", ALICE_PW)
    made = served.ws.conversations.create("alice", HOSTILE_TITLE)
    page.reload()
    link = page.locator("#conv-list .conv-link", has_text="chat")
    expect(link.locator(".conv-title")).to_have_text(HOSTILE_TITLE)
    link.click()
    expect(page.locator("#chat-title")).to_have_text(HOSTILE_TITLE)
    assert page.evaluate("location.hash") == f"#chat/{made.id}"
    ask(page, "<b>bold?</b> What was the Q3 2026 revenue?")
    page.reload()
    expect(page.locator(".turn-question")).to_have_text(["<b>bold?</b> What was the Q3 2026 revenue?"])
    assert page.locator("#pwn-title, .turn-question b").count() == 0
    assert page.locator(".turn-answer").count() == 1
    expect(page.locator(".turn-answer")).to_have_attribute("data-decision", re.compile(r"\w+"),
                                                          timeout=ANSWER_TIMEOUT_MS)
