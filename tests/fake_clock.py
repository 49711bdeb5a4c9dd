"""A clock and a sleep that only move when slept, for the canary observation loop.

`observe_canary` takes `clock` and `sleep` so that a test can check every step of a
five-minute bake time in no time, and pin how long the loop slept between checks.
"""


class FakeClock:
    """Starts at `now`; `sleep(s)` records s and moves the clock on by it."""

    def __init__(self, now: float):
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds
