"""Thread counts of the native libraries a query runs in."""
from __future__ import annotations


def limit_math_threads(threads: int) -> None:
    """Run numpy's matrix products (the exact path's scoring, :mod:`bastion.stores.exact`) on ``threads``
    threads, as each query's embedding runs (``server.query_threads``). With two BLAS threads a
    search beside a sync's embedder waits for the core the sync holds (figures: bench/sync_contention.py,
    docs/benchmarks.md, "Search latency and recall at scale")."""
    import importlib

    from threadpoolctl import threadpool_limits

    importlib.import_module("numpy")  # loads the BLAS library the limit applies to
    threadpool_limits(threads, user_api="blas")  # for the life of the process
