"""An order-preserving, bounded process map: how `generate` uses every core.

Volumes render independently (each has its own random stream), so they can go to worker
processes in any order; the parent takes results back in submission order, so what it writes
does not depend on the worker count. Only a small window of volumes is in flight, so memory
stays bounded whatever the dataset size.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext
from typing import TypeVar

from olives.config import ConfigError

T = TypeVar("T")
R = TypeVar("R")


def resolve_workers(requested: int) -> int:
    """`data.synthetic.num_workers` as a process count: 0 means every core this process may
    run on (its CPU affinity, which a container or `taskset` can make smaller than the
    machine's core count)."""
    if requested < 0:
        raise ConfigError(f"'data.synthetic.num_workers' = {requested} must be >= 0")
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def process_context() -> BaseContext:
    """`forkserver` where there is one, else `spawn`: never `fork`, which can deadlock a child
    when the parent already runs threads (torch, pyarrow, BLAS pools)."""
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return multiprocessing.get_context(method)


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], workers: int, window: int | None = None
) -> Iterator[tuple[T, R]]:
    """Yield `(item, fn(item))` in the order of `items`, computed by `workers` processes.

    At most `window` (default 2 x workers) items are submitted and not yet yielded, so a slow
    consumer holds back submission instead of piling up results. With `workers == 1` there is
    no pool: `fn` runs in this process. `fn` and the items must pickle (a top-level function,
    or a `functools.partial` of one). A failure in a worker is raised here, from the result of
    the item that failed (`BrokenProcessPool` if a worker died). Close the iterator (or
    exhaust it) to shut the pool down; queued items are then cancelled.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1:
        for item in items:
            yield item, fn(item)
        return
    window = 2 * workers if window is None else window
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=process_context())
    pending: deque[tuple[T, Future[R]]] = deque()
    try:
        for item in items:
            if len(pending) >= window:
                head, future = pending.popleft()
                yield head, future.result()
            pending.append((item, pool.submit(fn, item)))
        while pending:
            head, future = pending.popleft()
            yield head, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
