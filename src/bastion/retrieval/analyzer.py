"""The text analysis shared by indexing and querying for BM25.

English (and other Latin-script) words are lower-cased and Snowball-stemmed; Chinese,
Japanese and Korean runs become overlapping character bigrams (a single character stays a
unigram). Measured on CMRC 2018, bigrams retrieve as well as jieba without its dictionary.
The index stores the analysed terms joined by spaces and is built with a whitespace
tokenizer, so the store never needs to understand any language.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_CJK_CHARS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# a CJK run, or a run of other letters/digits that stops at CJK ("2026年" is "2026" + "年")
_TOKEN = re.compile(rf"[{_CJK_CHARS}]+|[^\W_{_CJK_CHARS}]+", re.UNICODE)
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_STOP = frozenset(
    "a an and are as at be but by for from has have he her his i in is it its of on or she that the their them "
    "there these they this to was were what when where which who whom why will with you your".split()
)


@lru_cache(maxsize=1)
def _stemmer() -> Any:  # PyStemmer ships no type hints
    import Stemmer

    return Stemmer.Stemmer("english")


def analyze(text: str) -> list[str]:
    """Terms for BM25.

    >>> analyze("Travel policies 差旅报销")
    ['travel', 'polici', '差旅', '旅报', '报销']
    """
    terms: list[str] = []
    words: list[str] = []
    for match in _TOKEN.finditer(text.lower()):
        token = match.group()
        if _CJK.match(token):
            if len(token) == 1:
                terms.append(token)
            else:
                terms.extend(token[i : i + 2] for i in range(len(token) - 1))
        elif token not in _STOP:
            terms.append(token)
            words.append(token)
    if words:  # stem Latin words in one call; keep their positions
        stems = iter(_stemmer().stemWords(words))
        terms = [next(stems) if not _CJK.match(t) else t for t in terms]
    return terms
