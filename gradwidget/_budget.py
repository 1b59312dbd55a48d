"""The overhead budget: what each sample cost the training, and when the next one may come."""

from __future__ import annotations

import math
import time


class Budget:
    """Spaces samples so that sampling takes at most ``max_overhead`` of the training's time.

    After a sample costing c CPU seconds, the next one waits at least c / max_overhead. The
    cost is the smallest of the last three samples' (a GC pass or first-call warm-up landing
    in one sample must not stall the display for seconds), and includes what the sample made
    the next steps pay (:meth:`track_tail`).

    Parameters
    ----------
    every : float
        Minimum seconds between samples; 0 turns the budget off (every step sampled).
    max_overhead : float
        Share of the time sampling may take; 1 turns the budget off.
    """

    def __init__(self, every: float, max_overhead: float):
        self.every = every
        self.max_overhead = max_overhead
        self.cost = 0.0  # CPU seconds (this thread) spent on the sample in flight
        self.recent: list[float] = []  # costs of the last samples
        self.tail: list[float] = []  # thread CPU at the forwards from a sampled step on
        self.tail_samples = 0  # the sample count when that sampled step was armed
        self.finished_at = 0.0  # perf_counter at the end of the last sample
        self.last_cost = 0.0  # CPU seconds of the last sample
        self.cpu_seconds = 0.0  # CPU seconds of all samples (hooks, reductions, sending)

    @property
    def capped(self) -> bool:
        return self.every > 0 and self.max_overhead < 1

    def armed(self, cpu0: float, samples: int) -> None:
        """A sample was armed from thread CPU time ``cpu0``: charge it, start its tail."""
        if self.capped:
            self.tail = [cpu0]
            self.tail_samples = samples
        self.cost = time.thread_time() - cpu0

    def finished(self, spent: float) -> float:
        """The sample ended after ``spent`` more CPU seconds; returns the earliest next time."""
        self.cost += spent
        self.last_cost = self.cost
        self.cpu_seconds += self.cost
        self.recent = [*self.recent[-2:], self.cost]
        earliest = -math.inf
        if self.capped and len(self.recent) > 1:
            earliest = time.perf_counter() + min(self.recent) / self.max_overhead
        self.finished_at = time.perf_counter()
        return earliest

    def track_tail(self, samples: int, extra: float) -> tuple[bool, float]:
        """At a forward after a sample: charge the sample what it really cost the training.

        The sampled backward runs the collector hooks, the probe runs in the next step, and
        the steps after a sample run slower (caches, allocator): none of that is inside the
        sample's own timing. With thread CPU at the forwards of steps s (sampled), s+1, s+2
        and s+3, the sample's full cost is ``(s..s+1) + (s+1..s+2) - 2 * (s+2..s+3)``.
        ``extra`` is CPU counted elsewhere (probe hooks) since. Returns whether ``extra``
        was charged, and the earliest time of the next sample (``-inf``: no constraint).
        """
        tail = self.tail
        tail.append(time.thread_time())
        if len(tail) < 4:
            return False, -math.inf
        self.tail = []
        if samples != self.tail_samples + 1 or not self.recent:
            return False, -math.inf  # the sampled forward had no backward, or another sample
        a, b, c = tail[1] - tail[0], tail[2] - tail[1], tail[3] - tail[2]
        full = max(a + b - 2 * c, self.last_cost + extra)
        self.cpu_seconds += full - self.last_cost
        self.last_cost = full
        self.recent[-1] = full
        if len(self.recent) > 1:
            return True, self.finished_at + min(self.recent) / self.max_overhead
        return True, -math.inf
