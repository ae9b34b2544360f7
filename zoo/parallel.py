"""Worker threads for extraction and materialization: a pool whose threads each run torch ops on one thread, an
ordered map over it with a bounded number of items in flight, and handing freed heap memory back to the OS."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterable, Iterator
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


class WorkerPool(ThreadPoolExecutor):
    """Threads that each run torch ops on one thread; ``workers`` says how many (see :func:`ordered_map`)."""

    def __init__(self, workers: int):
        import torch

        super().__init__(workers, thread_name_prefix="zoo", initializer=torch.set_num_threads, initargs=(1,))
        self.workers = workers


def ordered_map(fn: Callable[[Any], T], items: Iterable[Any], pool: WorkerPool | None,
                ahead: int | None = None) -> Iterator[T]:
    """``map(fn, items)`` in order; with a pool, at most ``ahead`` + 1 items in flight (bounds memory; default:
    one per worker)."""
    if pool is None:
        yield from map(fn, items)
        return
    ahead = max(1, pool.workers - 1) if ahead is None else max(1, ahead)
    running: deque[Future[T]] = deque()
    for item in items:
        running.append(pool.submit(fn, item))
        if len(running) > ahead:
            yield running.popleft().result()
    while running:
        yield running.popleft().result()


@contextmanager
def single_threaded_pool(workers: int, device: Any = None) -> Iterator[WorkerPool | None]:
    """A pool of ``workers`` threads, each running torch ops on one thread (None: serial, or not on a CPU)."""
    import torch

    if workers <= 1 or (device is not None and torch.device(device).type != "cpu"):
        yield None
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with WorkerPool(workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(threads)


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it in per-thread arenas otherwise, so a streaming
    process's RSS would grow to the sum of its past peaks rather than stay near its current working set)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def _find_malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to do
        return None


_malloc_trim = _find_malloc_trim()
