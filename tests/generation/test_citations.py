"""Citation checks: what a reader relies on when they click [n]."""
from bastion.generation.citations import check_answer, says_not_found

PASSAGES = {
    1: "Employees travelling to Shanghai may spend at most 800 CNY per night on hotels.",
    2: "Receipts must be submitted within 30 days of the expense.",
}


def test_valid_citation_is_kept_and_answer_is_grounded():
    c = check_answer("Hotels in Shanghai are capped at 800 CNY per night [1].", PASSAGES)
    assert c.grounded and c.cited == [1] and c.invalid_citations == 0
    assert "[1]" in c.text


def test_citation_to_a_passage_that_was_not_retrieved_is_removed_and_counted():
    c = check_answer("Receipts must be submitted within 30 days [2][7].", PASSAGES)
    assert c.cited == [2] and c.invalid_citations == 1
    assert "[7]" not in c.text and c.grounded
    assert c.invalid_detail[0]["n"] == 7


def test_citation_whose_source_does_not_say_it_is_removed():
    # source 1 is about hotels, not receipts: the citation is wrong even though [1] exists
    c = check_answer("Receipts must be submitted within 30 days [1].", PASSAGES)
    assert c.invalid_citations == 1 and not c.grounded


def test_a_number_the_source_does_not_contain_invalidates_the_citation():
    c = check_answer("Hotels in Shanghai are capped at 900 CNY per night [1].", PASSAGES)
    assert not c.grounded and c.invalid_citations == 1


def test_answer_without_citations_is_not_grounded():
    c = check_answer("Hotels in Shanghai are capped at 800 CNY per night.", PASSAGES)
    assert not c.grounded and c.cited == []


def test_bare_citation_after_the_full_stop_belongs_to_the_sentence():
    c = check_answer("Hotels in Shanghai are capped at 800 CNY per night. [1]", PASSAGES)
    assert c.grounded and c.cited == [1]


def test_one_unsupported_sentence_makes_the_answer_ungrounded():
    c = check_answer("Hotels in Shanghai are capped at 800 CNY per night [1]. The CEO earns 5 million euros.",
                     PASSAGES)
    assert not c.grounded


def test_chinese_brackets_and_chinese_text():
    passages = {1: "上海出差住宿标准为每晚不超过800元人民币。"}
    assert check_answer("上海住宿标准为每晚不超过800元【1】。", passages).grounded
    assert not check_answer("上海住宿标准为每晚不超过900元【1】。", passages).grounded


def test_not_found_marker_is_recognised_but_not_inside_a_real_answer():
    assert says_not_found("NOT_IN_SOURCES", "NOT_IN_SOURCES")
    assert says_not_found(" not_in_sources. ", "NOT_IN_SOURCES")
    assert not says_not_found("Hotels are capped at 800 CNY [1]. Anything else is NOT_IN_SOURCES, "
                              "for example meals and taxis in other cities.", "NOT_IN_SOURCES")
