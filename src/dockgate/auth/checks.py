"""Password hash checks off the event loop: a small pool of threads with a bounded queue.

A bcrypt or argon2 check takes milliseconds to tens of milliseconds of CPU by design. Run on
the event loop, every request of every client waited behind it: 200 failed logins took every
client's `/_ping` from 1.3 ms to 780 ms for 15 s. Here the check runs in a worker thread
(bcrypt and argon2-cffi release the GIL while they hash), and the request that needs it waits,
paused, while the loop serves everybody else.

Bounded both ways: `threads` checks run at once, and at most `limit` wait or run; past that,
`submit` says no and the caller answers 503 at once instead of queueing without end (a flood of
guesses must not build a backlog that delays honest logins by minutes). Successful checks are
remembered by the caller (htpasswd.py), so a client that has logged in once never comes here
again.

One thread per process: a hash keeps a core busy, and the event loop, the daemon and the other
clients need the rest. Measured with bench/auth_burst.py on 2 shared cores (200 cost-10 guesses,
`/_ping` every 5 ms): p99 during the burst 12-23 ms with one thread, 16-39 ms with two (idle:
4-5 ms); lowering the threads' priority (nice +10) made no difference beyond the noise, and a
low-priority thread holding the GIL could keep the loop waiting. `--workers N` gives N threads.

Each worker process has its own pool. The threads start at the first check, so
never before the workers are forked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

CHECK_THREADS = 1
CHECK_QUEUE = 64  # checks waiting or running at once


class CheckPool:
    def __init__(self, threads: int = CHECK_THREADS, limit: int = CHECK_QUEUE) -> None:
        self.threads = threads
        self.limit = limit
        self.pending = 0  # checks submitted and not yet done; only touched on the event loop
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, check: Callable[[], bool]) -> asyncio.Future[bool] | None:
        """Run `check` in a worker thread; its future completes on the running loop. None when
        `limit` checks are already waiting or running (the caller refuses the request)."""
        if self.pending >= self.limit:
            return None
        executor = self._executor
        if executor is None:
            executor = self._executor = ThreadPoolExecutor(
                self.threads, thread_name_prefix="dockgate-auth"
            )
        future = asyncio.get_running_loop().run_in_executor(executor, _never_raises, check)
        self.pending += 1
        future.add_done_callback(self._done)
        return future

    def _done(self, _future: asyncio.Future[bool]) -> None:
        self.pending -= 1

    def close(self) -> None:
        """Stop the threads once the checks already running are done (at shutdown)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _never_raises(check: Callable[[], bool]) -> bool:
    """A check that fails in an unforeseen way is a failed login, never a request left hanging
    or a traceback in place of the 401."""
    try:
        return check()
    except Exception:
        return False
