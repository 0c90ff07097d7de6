"""Reading a long-running client's output as it arrives; waiting for a condition."""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from typing import IO, TypeVar

T = TypeVar("T")


class LineReader:
    """Reads lines from a binary stream in a thread; `expect` waits for a matching line."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        self.lines: list[str] = []
        self.eof = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            for raw in iter(stream.readline, b""):
                self._queue.put(raw.decode(errors="replace").rstrip("\r\n"))
        except (OSError, ValueError):
            pass
        finally:
            self._queue.put(None)

    def _take(self, timeout: float) -> bool:
        """Move one line (or EOF) from the queue to `lines`; False on timeout."""
        try:
            item = self._queue.get(timeout=max(timeout, 0))
        except queue.Empty:
            return False
        if item is None:
            self.eof = True
        else:
            self.lines.append(item)
        return True

    def expect(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        """Wait for a line matching ``pattern`` (regex search) that arrives after the last match."""
        rx = re.compile(pattern)
        start = getattr(self, "_pos", 0)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.lines)):
                m = rx.search(self.lines[i])
                if m:
                    self._pos = i + 1
                    return m
            start = len(self.lines)
            if self.eof:
                raise AssertionError(f"EOF before a line matching {pattern!r}; got {self.lines!r}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no line matching {pattern!r} within {timeout}s; got {self.lines[-20:]!r}"
                )
            self._take(remaining)

    def read_to_eof(self, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no EOF within {timeout}s; got {self.lines[-20:]!r}")
            self._take(remaining)
        return self.lines


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or probe!r}")
        time.sleep(interval)


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``pred`` every ``step`` s until it is true (True) or ``timeout`` s have passed
    (False): the caller asserts, with its own message."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
