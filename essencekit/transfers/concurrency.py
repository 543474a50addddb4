"""Bounded, ordered background work: reading and aligning photos ahead of the models, and
encoding and writing outputs behind them.

Both keep at most ``depth`` tasks in flight, so memory stays flat however many photos a run
has, and hand results back in submission order. With ``workers = 0`` everything runs in the
calling thread, in order (the CPU backend's default: on a few cores the threads would only
take cores from the models). On an exception or Ctrl-C, queued tasks are cancelled and running
ones finish: a running writer completes its file (written under a temporary name and renamed),
so no partial file is left.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


class OrderedPool:
    """``submit(fn, *args)`` now, ``ready()`` / ``drain()`` the results in submission order."""

    def __init__(self, workers: int, depth: int, name: str):
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix=name) if workers > 0 else None
        self.depth = max(1, depth)
        self.pending: deque[Future] = deque()

    def submit(self, fn: Callable, *args) -> None:
        if self.executor is None:
            self.pending.append(_done(fn(*args)))
        else:
            self.pending.append(self.executor.submit(fn, *args))

    def submit_value(self, value) -> None:
        """A result that needs no work, kept in order with the others."""
        self.pending.append(_done(value))

    def ready(self) -> Iterator:
        """Finished results at the head of the queue; blocks while more than ``depth`` wait."""
        while self.pending and (self.pending[0].done() or len(self.pending) > self.depth):
            yield self.pending.popleft().result()

    def drain(self) -> Iterator:
        while self.pending:
            yield self.pending.popleft().result()

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()


def ordered_map(fn: Callable, items: Iterable, workers: int, depth: int, name: str = "essencekit") -> Iterator:
    """``map(fn, items)`` with up to ``depth`` calls ahead on ``workers`` threads."""
    if workers <= 0:
        for item in items:
            yield fn(item)
        return
    pool = OrderedPool(workers, depth, name)
    try:
        for item in items:
            pool.submit(fn, item)
            if len(pool.pending) >= pool.depth:
                yield pool.pending.popleft().result()
        yield from pool.drain()
    finally:
        pool.close()
