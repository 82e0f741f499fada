"""Progress lines for the task log: ``<what> N% of <total>, ETA E s`` while a stage works, then a closing line.

They go to stderr, which the local runner and DockerOperator stream into the Airflow task
log line by line, so a person watching a long lecture sees how far it is and when it ends.
"""

from __future__ import annotations

import time

from konspekt.contracts import log


class Progress:
    """Logs ``<what> N% of <total> <unit>, ETA E s`` at most every ``every`` seconds, and
    ``<what> 100% of <total> <unit> in T s`` once :meth:`finish` is called."""

    every = 5.0  # seconds between lines; tests set 0

    def __init__(self, what: str, total: float, unit: str = "s audio") -> None:
        self.what, self.total, self.unit = what, total, unit
        self.started = self.last = time.monotonic()
        self.first: tuple[float, float] | None = None  # (time, fraction) of the first update

    def update(self, done: float) -> None:
        now = time.monotonic()
        fraction = min(max(done / self.total, 0.0), 1.0) if self.total else 0.0
        # The rate since the first update leaves out model loading and VAD, which come before it.
        since, base = self.first if self.first and fraction > self.first[1] else (self.started, 0.0)
        self.first = self.first or (now, fraction)
        if now - self.last < self.every or not self.total:
            return
        self.last = now
        eta = (now - since) * (1 - fraction) / max(fraction - base, 1e-6)
        log(f"{self.what} {fraction:.0%} of {self.total:.0f} {self.unit}, ETA {eta:.0f} s")

    def finish(self) -> None:
        """The closing line: even work shorter than ``every`` leaves one line in the log."""
        log(f"{self.what} 100% of {self.total:.0f} {self.unit} in {time.monotonic() - self.started:.0f} s")
