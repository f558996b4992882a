"""Polling until a condition holds: the one helper the lab, the root and end-to-end tests and the
benchmarks share, so that each waits on a condition rather than a fixed sleep."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    """A condition was not reached in time. An AssertionError, so a test that waits fails as
    an assertion; the lab passes its own error class (LabError, FRRError)."""


def wait_until(
    pred: Callable[[], T],
    timeout: float = 20.0,
    interval: float = 0.05,
    what: str = "condition",
    *,
    error: Callable[[str], BaseException] = Timeout,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Call `pred` every `interval` seconds until it returns a true value, and return that value.

    An exception of a class in `ignore` counts as "not yet" (a daemon not answering during its
    start); after `timeout` seconds raise `error("<what> not reached within <timeout> s")`,
    with the last ignored exception when there was one. `pred` runs at least once.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            value = pred()
        except ignore as exc:
            last, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            seen = f" (last error: {last})" if last is not None else ""
            raise error(f"{what} not reached within {timeout:g} s{seen}")
        time.sleep(interval)
