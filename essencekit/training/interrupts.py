"""Ctrl-C and SIGTERM during training: finish the step, save, then stop.

A signal that lands inside the optimiser's in-place update would leave weights half-updated;
instead, while :func:`deferred_stop` is active, the first SIGINT or SIGTERM only raises a flag
that the loop reads between steps (on every process: under torchrun each one gets the signal,
and they agree to stop at the same step). A second signal stops at once, without saving.
"""

from __future__ import annotations

import contextlib
import signal
import threading


class StopFlag:
    def __init__(self):
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None


@contextlib.contextmanager
def deferred_stop():
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag  # signals reach only the main thread: nothing to defer
        return

    def on_signal(number, frame):
        if flag:
            raise KeyboardInterrupt  # the second one: stop now
        flag.signal = number

    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
