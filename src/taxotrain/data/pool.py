"""The worker pool prepare shares between its stages: an ordered map that never reads far ahead of its consumer.

``multiprocessing.Pool.imap`` reads its whole input into the task queue at once, so a corpus of millions of paths
(or rows) would be held in memory however slowly the results were used. :func:`ordered_map` sends at most ``ahead``
items per worker before the one it waits for, and yields the results in input order.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(fn: Callable[[T], R], items: Iterable[T], workers: int, ahead: int = 8) -> Iterator[R]:
    """``fn(item)`` of each item, in order, by ``workers`` processes (in this process when ``workers <= 1``), with at
    most ``ahead`` items per worker sent before the one awaited. ``fn`` must be a module-level function."""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    first = list(islice(it, max(1, ahead) * workers))
    if len(first) <= 1:  # one item: a pool would only add its start-up
        yield from map(fn, first)
        return
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    with ctx.Pool(workers) as pool:
        pending: deque[Any] = deque(pool.apply_async(fn, (x,)) for x in first)
        while pending:
            result = pending.popleft().get()
            for x in islice(it, 1):
                pending.append(pool.apply_async(fn, (x,)))
            yield result
