"""Items of a live() input stream besides speech: they steer the conversation, not the words.

    client.live(text=[..., INTERRUPT, LISTEN, ..., STOP_LISTENING, ...], photo=asset)

The server's live pipeline (services.common.live) imports these same classes, so an isinstance check
agrees whether an item came from the client, the CLI or the embedded pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INTERRUPT", "LISTEN", "STOP_LISTENING", "Interrupt", "Listen"]


class Interrupt:
    """An item among live text or audio that stops the speech at once (the user spoke over the avatar)."""

    def __repr__(self) -> str:
        return "INTERRUPT"


@dataclass(frozen=True)
class Listen:
    """A live text or audio item: the user started (on) or stopped talking."""

    on: bool

    def __repr__(self) -> str:
        return "LISTEN" if self.on else "STOP_LISTENING"


INTERRUPT = Interrupt()
LISTEN, STOP_LISTENING = Listen(True), Listen(False)
