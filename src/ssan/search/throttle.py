"""Brute-force throttling: clients that present wrong tokens are slowed down, then refused.

Each client address gets a sliding window of its recent failures. The n-th failure in the
window is answered after ``min(max_delay_s, (n - 1) * delay_step_s)``; once ``limit``
failures are in the window, every request of that client is refused (429) until the oldest
failure leaves it. Checking and recording happen without awaiting in between, so parallel
guesses from one client cannot slip past the limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque

log = logging.getLogger(__name__)


class FailureThrottle:
    """Per-client failure counts over a sliding window.

    Args:
        limit: failures in the window after which the client is refused.
        window_s: length of the window, in seconds.
        delay_step_s: extra delay for each failure already in the window.
        max_delay_s: the longest delay.
        max_clients: clients remembered at most (the least recently failing are forgotten first).
    """

    def __init__(
        self,
        limit: int = 10,
        window_s: float = 60.0,
        delay_step_s: float = 0.1,
        max_delay_s: float = 1.0,
        max_clients: int = 10_000,
    ):
        if limit < 1 or window_s <= 0:
            raise ValueError(f"limit must be >= 1 and window_s > 0, got {limit}, {window_s}")
        self.limit = int(limit)
        self.window_s = float(window_s)
        self.delay_step_s = float(delay_step_s)
        self.max_delay_s = float(max_delay_s)
        self.max_clients = int(max_clients)
        self._failures: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque:
        times = self._failures.get(client)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[client]
        return times

    def retry_after(self, client: str) -> float:
        """Seconds until ``client`` may try again; 0 when it is not refused."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window_s - now)

    def failed(self, client: str) -> float:
        """Record a failure of ``client``; returns the delay to answer it after, in seconds."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            self._failures[client] = times
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)
            count = len(times)
        if count == self.limit:
            log.warning(
                "client %s gave %d wrong tokens within %.0f s: refused for a while", client, count, self.window_s
            )
        return min(self.max_delay_s, (count - 1) * self.delay_step_s)
