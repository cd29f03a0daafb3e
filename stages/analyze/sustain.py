"""A condition that must hold for a while before it counts, and stay false for a while before it resets.

Rules fire on the rising edge of a sustained condition: once per episode, however the detector flickers.
Times are stream times (frame pts), so replay and live agree and no wall clock is involved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Hashable, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass
class _Episode:
    since: float  # start of the current run of true (gaps shorter than off_for do not break it)
    last_true: float
    fired: bool = False


class Sustain(Generic[K]):
    def __init__(self, on_for: float, off_for: float) -> None:
        self.on_for = on_for
        self.off_for = off_for
        self._eps: dict[K, _Episode] = {}

    def update(self, key: K, now: float, cond: bool) -> bool:
        """Feed the condition for `key` at time `now`; True exactly when the episode first reaches `on_for`."""
        ep = self._eps.get(key)
        if ep is not None and now - ep.last_true > self.off_for:
            del self._eps[key]  # false (or unseen) long enough: the episode is over
            ep = None
        if not cond:
            return False
        if ep is None:
            ep = self._eps[key] = _Episode(now, now)
        ep.last_true = now
        if not ep.fired and now - ep.since >= self.on_for:
            ep.fired = True
            return True
        return False

    def holds(self, key: K, now: float) -> bool:
        """Whether the episode of `key` that fired is still going on (not false or unseen for `off_for`)."""
        ep = self._eps.get(key)
        return ep is not None and ep.fired and now - ep.last_true <= self.off_for

    def duration(self, key: K, now: float) -> float:
        ep = self._eps.get(key)
        return 0.0 if ep is None else now - ep.since

    def expire(self, now: float) -> None:
        """Drop episodes whose condition has been false (or unseen) longer than `off_for`."""
        for key in [k for k, ep in self._eps.items() if now - ep.last_true > self.off_for]:
            del self._eps[key]
