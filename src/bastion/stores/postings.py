"""BM25 over a small set of chunks held in memory: the full-text side of :mod:`bastion.stores.exact`.

LanceDB's full-text index scores a query among the posting lists of the whole table and drops the
rows the ACL filter does not admit, so a small group's filtered query costs more than an unfiltered
one (figures: docs/benchmarks.md, 'Search latency'). When a
principal's chunks are few enough that their vectors are held in memory anyway, their terms are
held too, as one small inverted index per part, and BM25 is computed over the principal's chunks
only: a few binary searches and array operations.

Scores use the statistics of the chunks the principal may read (document count, document
frequencies, average length), with LanceDB's BM25 (k1 = 1.2, b = 0.75, idf = ln(1 + (N - df + 0.5) /
(df + 0.5))): when the set is the whole table the ranking is LanceDB's (tests/stores/test_postings.py).
For a smaller set the ranking can differ from the index's, which weighs terms by the whole table:
here a term common in the group's documents counts for less, as it would in an index of only those
documents, and nothing about chunks the principal may not read moves its scores.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

K1, B = 1.2, 0.75


@dataclass(frozen=True)
class Postings:
    """An inverted index of a part's chunks: term -> (chunk position, term frequency), and chunk lengths."""
    vocab: np.ndarray  # the distinct terms, sorted (object array of str)
    starts: np.ndarray  # int64, len(vocab) + 1: term i's postings are [starts[i], starts[i + 1])
    docs: np.ndarray  # int32 chunk positions within the part, ascending within a term
    tf: np.ndarray  # float32 occurrences of the term in the chunk
    lengths: np.ndarray  # float32 terms per chunk

    @classmethod
    def of(cls, texts: Sequence[str | None] | pa.Array | pa.ChunkedArray) -> Postings:
        """From the chunks' ``terms`` (analysed terms joined by spaces, as the full-text index reads them)."""
        arr = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(list(texts), pa.string())
        if isinstance(arr, pa.ChunkedArray):
            arr = arr.combine_chunks()
        n = len(arr)
        split = pc.utf8_split_whitespace(pc.fill_null(arr, ""))
        flat = pc.list_flatten(split)
        doc = np.repeat(np.arange(n, dtype=np.int64), pc.list_value_length(split).to_numpy(zero_copy_only=False))
        real = pc.not_equal(flat, "").to_numpy(zero_copy_only=False)  # splitting "" or " a" yields empty tokens
        flat, doc = flat.filter(pa.array(real)), doc[real]
        lengths = np.bincount(doc, minlength=n).astype(np.float32)
        if not len(flat):
            return cls(np.array([], object), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), lengths)
        encoded = flat.dictionary_encode()
        order = pc.sort_indices(encoded.dictionary).to_numpy()
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        pairs, tf = np.unique(rank[encoded.indices.to_numpy()] * n + doc, return_counts=True)  # sorted by term, then chunk
        terms = pairs // n
        vocab = np.array(encoded.dictionary.take(pa.array(order)).to_pylist(), dtype=object)
        return cls(vocab, np.searchsorted(terms, np.arange(len(vocab) + 1)), (pairs % n).astype(np.int32),
                   tf.astype(np.float32), lengths)

    def lookup(self, term: str) -> tuple[int, int] | None:
        """The range of ``term``'s postings, or None when no chunk of the part holds it."""
        i = int(np.searchsorted(self.vocab, term))
        if i < len(self.vocab) and self.vocab[i] == term:
            return int(self.starts[i]), int(self.starts[i + 1])
        return None

    @cached_property
    def nbytes(self) -> int:  # counted once: a refresh asks for every part's, and the vocabulary is long
        return (int(self.starts.nbytes + self.docs.nbytes + self.tf.nbytes + self.lengths.nbytes)
                + sum(57 + len(t) for t in self.vocab) + 8 * len(self.vocab))


def bm25(terms: Sequence[str], parts: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, Postings]],
         k: int, shared: bool = True) -> list[tuple[str, float, int]]:
    """The top-k (chunk id, BM25 score, row id) over the live chunks of ``parts``, each (row ids, chunk
    ids, live mask, postings); with ``shared``, a chunk in several parts (a row under two of a
    principal's labels) counts once; without, the parts' live rows are known to be distinct (the parts
    of one label's entry) and no de-duplication runs. Ties in chunk id order."""
    live = [(rows, ids, alive, p) for rows, ids, alive, p in parts if alive.any()]
    if not live or not terms:
        return []
    shared = shared and len(live) > 1
    rows = np.concatenate([r[a] for r, _, a, _ in live])
    lengths = np.concatenate([p.lengths[a] for _, _, a, p in live])
    if shared:
        rows, first = np.unique(rows, return_index=True)
        lengths = lengths[first]
    n, avgdl = len(rows), float(lengths.mean()) if len(lengths) else 0.0
    if n == 0 or avgdl == 0.0:
        return []
    found_rows, found_ids, found_scores = [], [], []
    for term in dict.fromkeys(terms):
        t_rows, t_ids, t_tf, t_len = [], [], [], []
        for r, ids, alive, p in live:
            span = p.lookup(term)
            if span is None:
                continue
            docs = p.docs[span[0]:span[1]]
            keep = alive[docs]
            docs = docs[keep]
            t_rows.append(r[docs])
            t_ids.append(ids[docs])
            t_tf.append(p.tf[span[0]:span[1]][keep])
            t_len.append(p.lengths[docs])
        if not t_rows:
            continue
        r, ids, tf, dl = (np.concatenate(x) for x in (t_rows, t_ids, t_tf, t_len))
        if shared:
            r, first = np.unique(r, return_index=True)
            ids, tf, dl = ids[first], tf[first], dl[first]
        df = len(r)
        if df == 0:
            continue
        idf = np.log1p((n - df + 0.5) / (df + 0.5))
        found_rows.append(r)
        found_ids.append(ids)
        found_scores.append(idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * dl / avgdl)))
    if not found_rows:
        return []
    r, ids, s = (np.concatenate(x) for x in (found_rows, found_ids, found_scores))
    rows_u, first, inverse = np.unique(r, return_index=True, return_inverse=True)
    scores = np.bincount(inverse, weights=s.astype(np.float64))
    ids = ids[first]
    # every candidate scoring at least the k-th: those tied with it beyond the cut may sort first by chunk id
    top = np.flatnonzero(scores >= np.partition(scores, -k)[-k]) if len(scores) > k else np.arange(len(scores))
    best = sorted(((str(ids[i]), float(scores[i]), int(rows_u[i])) for i in top), key=lambda x: (-x[1], x[0]))
    return best[:k]


def take(p: Postings, mask: np.ndarray) -> Postings:
    """The postings of the chunks ``mask`` selects, renumbered in order."""
    position = np.cumsum(mask) - 1
    term = np.repeat(np.arange(len(p.vocab)), np.diff(p.starts))
    keep = mask[p.docs]
    term = term[keep]
    return Postings(p.vocab, np.searchsorted(term, np.arange(len(p.vocab) + 1)), position[p.docs[keep]].astype(np.int32),
                    p.tf[keep], p.lengths[mask])


def join(parts: Sequence[Postings]) -> Postings:
    """The postings of the parts' chunks one after another (the second part's first chunk follows the first's last)."""
    vocab = np.unique(np.concatenate([p.vocab for p in parts])) if parts else np.array([], object)
    terms, docs, tfs, offset = [], [], [], 0
    for p in parts:
        ids = np.searchsorted(vocab, p.vocab)
        terms.append(np.repeat(ids, np.diff(p.starts)))
        docs.append(p.docs.astype(np.int64) + offset)
        tfs.append(p.tf)
        offset += len(p.lengths)
    term, doc, tf = np.concatenate(terms), np.concatenate(docs), np.concatenate(tfs)
    order = np.lexsort((doc, term))
    return Postings(vocab.astype(object), np.searchsorted(term[order], np.arange(len(vocab) + 1)), doc[order].astype(np.int32),
                    tf[order], np.concatenate([p.lengths for p in parts]) if parts else np.zeros(0, np.float32))
