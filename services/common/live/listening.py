"""How the avatar listens while the user talks (a voice agent's other half of the conversation).

A face that freezes while someone talks to it looks switched off. While listening is on, the live
timeline gets what a person does to show they follow: a slight tilt and raised brows as the user
starts, then a small nod every few seconds (seeded, so a replay is the same). They are ordinary
time-coded motions (services.expression.motions), laid on the silence the avatar rests in, so they
work over text and audio alike.

    listening = Listening(seed)
    listening.start(at_s)                 # LiveVideoRequest.listening = true (LISTEN)
    motions = listening.motions(t0, t1)   # for each piece of the timeline as it goes out
    listening.stop()                      # false (STOP_LISTENING), or the avatar's next words
"""
from __future__ import annotations

import random

from likeness_client.markers import LISTEN, STOP_LISTENING, Listen  # noqa: F401 (the client's markers, re-exported)

NOD_EVERY_S = (2.2, 4.0)  # between acknowledging nods ("mm-hm")
NOD_STRENGTH = (0.35, 0.6)  # of a full nod (7 degrees): 2.5-4 degrees
FIRST_NOD_S = (0.8, 1.6)  # after listening starts
LEAN_IN = (("raise_brows", 0.3), ("tilt", 0.35))  # as the user starts talking




class Listening:
    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)
        self._next_nod: float | None = None  # None: not listening
        self._pending: list[tuple[float, str, float]] = []
        self._side = self._rng.choice(("left", "right"))

    @property
    def on(self) -> bool:
        return self._next_nod is not None

    def start(self, at_s: float) -> None:
        if self.on:
            return
        self._side = "left" if self._side == "right" else "right"  # (not the same way every time)
        self._pending = [(at_s, f"tilt_{self._side}" if name == "tilt" else name, strength)
                         for name, strength in LEAN_IN]
        self._next_nod = at_s + self._rng.uniform(*FIRST_NOD_S)

    def stop(self) -> None:
        self._next_nod, self._pending = None, []

    def motions(self, start_s: float, end_s: float) -> list[tuple[float, str, float]]:
        """The motions that start in [start_s, end_s) of the timeline (the lean-in at or after start_s)."""
        out = [(max(t, start_s), name, strength) for t, name, strength in self._pending]
        self._pending = []
        while self._next_nod is not None and self._next_nod < end_s:
            out.append((max(self._next_nod, start_s), "nod", round(self._rng.uniform(*NOD_STRENGTH), 2)))
            self._next_nod += self._rng.uniform(*NOD_EVERY_S)
        return out
