"""A time limit for a block of a test: a hung Ray pipeline or sweep fails the test instead of hanging CI."""

from __future__ import annotations

import contextlib
import signal


@contextlib.contextmanager
def watchdog(seconds: int):
    """Fail the block with TimeoutError after ``seconds`` (a hung Ray Data pipeline has no timeout of its own).

    SIGALRM, not killing the cluster: a driver whose GCS is gone for 60 s is ended by Ray, and with it pytest.
    """
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
