"""Live speech handed on at the pace it is heard, so that it can be interrupted.

A voice agent's avatar must stop talking when the user speaks over it (barge-in). Speech is made
faster than it is heard (TTS, or an agent's audio pushed as fast as it is synthesized); if all of it
went on to the face and the encoder at once, nothing could be taken back. A `Pacer` takes pieces as
fast as they come and hands them out in CHUNK_S pieces no more than `lead_s` ahead of the wall clock;
`cut` drops what has not gone out yet (the voice fades out over FADE_S) and says where the timeline
now ends. `paced_audio` does this for audio as it arrives (LiveVideo with audio_format, `likeness
live --audio-in`); `live_script.paced` for text spoken a sentence at a time.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from likeness_client.markers import INTERRUPT, Interrupt  # noqa: F401 (the client's markers, re-exported)

from services.common import config
from services.common.live.listening import Listen, Listening


@dataclass
class LivePiece:
    """Audio to append to the live timeline, emotion changes and motions (seconds on that timeline)."""

    audio: np.ndarray  # float32 mono at sample_rate
    sample_rate: int
    start_s: float
    emotions: list[tuple[float, str, float]] = field(default_factory=list)
    motions: list[tuple[float, str, float]] = field(default_factory=list)
    idle: bool = False  # silence while waiting for the writer (not a pause the text asked for)


def speech_lead_s() -> float:
    return config.get_float("LIKENESS_LIVE_SPEECH_LEAD_S")


CHUNK_S = 0.1  # speech goes out in pieces this long: an interrupt cuts between two of them
FADE_S = 0.02  # ... and the speech fades out over this long instead of clicking
SPEAKING_RMS = 0.01  # audio louder than this (-40 dBFS) is the avatar talking: it stops listening
MAX_QUEUED_S = 20.0  # speech spoken ahead of what went out: more waits (an interrupt would waste it)
# The stream's first speech goes out this far at once: the face's first frame needs audio well ahead
# of it (docs/notes/live.md#the-first-speech-at-once), and the player starts that much behind the clock.
# From then on the lead only has to keep the pipeline ahead of that player, so it can be shorter, and an
# interrupt stops sooner.
START_LEAD_S = 2.0


class Pacer:
    """Pieces in as fast as they are spoken; the same audio out in CHUNK_S pieces, none starting more
    than `lead_s` ahead of the clock (0: as fast as they come), except the stream's first `start_lead_s`
    (default: `lead_s`), which goes at once. `cut` drops what has not gone out."""

    def __init__(self, lead_s: float, clock: Callable[[], float], start_lead_s: float | None = None) -> None:
        self.lead_s, self.clock = lead_s, clock
        self.start_lead_s = lead_s if start_lead_s is None else max(lead_s, start_lead_s)
        self.started_at: float | None = None  # the clock when the first piece went out
        self.sent_until = 0.0  # the timeline's end of what went out
        self.epoch = 0  # counts cuts: pieces spoken before the latest cut are dropped on arrival
        self.received = False
        self._queue: deque[LivePiece] = deque()
        self._closed, self._failure = False, None
        self._ready = threading.Condition()

    def put(self, pieces: Iterable[LivePiece], epoch: int) -> None:
        for piece in pieces:
            chunk = max(1, int(round(CHUNK_S * piece.sample_rate)))
            parts = [replace(piece, audio=piece.audio[i:i + chunk], start_s=piece.start_s + i / piece.sample_rate,
                             emotions=[], motions=[]) for i in range(0, max(len(piece.audio), 1), chunk)]
            for events, name in ((piece.emotions, "emotions"), (piece.motions, "motions")):
                for event in events:  # with the part playing at its time code: a cut drops it with the part
                    at = min(int((event[0] - piece.start_s) * piece.sample_rate) // chunk, len(parts) - 1)
                    getattr(parts[max(at, 0)], name).append(event)
            with self._ready:
                while epoch == self.epoch and not self._closed and self._queue and \
                        self._queue[-1].start_s - self.sent_until > MAX_QUEUED_S:
                    self._ready.wait()
                if epoch == self.epoch and not self._closed:
                    self.received = True
                    self._queue.extend(parts)
                    self._ready.notify_all()

    def cut(self) -> float:
        """Drops every piece not yet out (the next one's first FADE_S, faded out, still goes); returns
        where the timeline then ends."""
        with self._ready:
            self.epoch += 1
            end = self.sent_until
            following = self._queue[0] if self._queue else None
            self._queue.clear()
            if following is not None and not following.idle and len(following.audio):
                n = min(len(following.audio), int(FADE_S * following.sample_rate))
                tail = following.audio[:n] * np.linspace(1.0, 0.0, n, dtype=np.float32)
                self._queue.append(LivePiece(tail, following.sample_rate, following.start_s))
                end += n / following.sample_rate
            self._ready.notify_all()
            return end

    def close(self, failure: BaseException | None = None) -> None:
        with self._ready:
            self._closed, self._failure = True, self._failure or failure
            self._ready.notify_all()

    def out(self) -> Iterator[LivePiece]:
        while True:
            with self._ready:
                while True:
                    if self._failure is not None:
                        raise self._failure
                    if self._queue:
                        wait = 0.0
                        if self.started_at is not None and self.lead_s > 0:
                            ahead = max(self.clock() - self.started_at + self.lead_s, self.start_lead_s)
                            wait = self._queue[0].start_s - ahead
                        if wait <= 0:
                            break
                        self._ready.wait(wait)
                    elif self._closed:
                        return
                    else:
                        self._ready.wait()
                piece = self._queue.popleft()
                if self.started_at is None:
                    self.started_at = self.clock()
                self.sent_until = piece.start_s + len(piece.audio) / piece.sample_rate
                self._ready.notify_all()  # (room for more)
            yield piece


def paced_by(lead_s: float | None, clock: Callable[[], float]) -> Pacer:
    """A Pacer at `lead_s`, or else at LIKENESS_LIVE_SPEECH_LEAD_S after a START_LEAD_S start."""
    if lead_s is not None:
        return Pacer(lead_s, clock)
    lead_s = speech_lead_s()
    return Pacer(lead_s, clock, START_LEAD_S if lead_s > 0 else None)


def paced_audio(items: Iterable[np.ndarray | LivePiece | Interrupt | Listen], sample_rate: int, *,
                lead_s: float | None = None, clock: Callable[[], float] = time.monotonic, seed: int = 0,
                on_interrupt: Callable[[float, str], None] | None = None) -> Iterator[LivePiece]:
    """Audio as it arrives (float mono arrays at `sample_rate`, or LivePieces carrying emotion changes
    and motions) on one timeline, handed out at most `lead_s` (LIKENESS_LIVE_SPEECH_LEAD_S) ahead of
    the clock (the first START_LEAD_S at once, unless `lead_s` is given): audio that comes at real
    time (a microphone) is never held, audio pushed faster (a voice agent's TTS) waits. An INTERRUPT
    item drops what has not gone out; the audio after it continues the timeline where the speech
    stopped, and `on_interrupt(time_code, "")` is told where that is.
    LISTEN / STOP_LISTENING items (services.common.live.listening) put listening motions on the audio that
    follows (the caller sends silence meanwhile) until the audio has sound again; an interrupt starts
    listening too."""
    pacer = paced_by(lead_s, clock)
    listening = Listening(seed)
    stop = threading.Event()

    def read() -> None:
        position = 0.0  # where the next audio goes on the timeline
        try:
            for item in items:
                if stop.is_set():
                    return
                if isinstance(item, Interrupt):
                    position = pacer.cut()
                    listening.start(position)  # (the user is talking)
                    if on_interrupt is not None:
                        on_interrupt(position, "")
                    continue
                if isinstance(item, Listen):
                    if item.on:
                        listening.start(position)
                    else:
                        listening.stop()
                    continue
                if isinstance(item, LivePiece):
                    if item.sample_rate != sample_rate:
                        raise ValueError(f"a piece at {item.sample_rate} Hz in audio at {sample_rate} Hz")
                    piece = replace(item, audio=np.asarray(item.audio, np.float32).reshape(-1), start_s=position)
                else:
                    piece = LivePiece(np.asarray(item, np.float32).reshape(-1), sample_rate, position)
                end = position + len(piece.audio) / sample_rate
                if listening.on and len(piece.audio) and np.sqrt(np.mean(piece.audio ** 2)) > SPEAKING_RMS:
                    listening.stop()  # the avatar talks again
                piece.motions = piece.motions + listening.motions(position, end)
                position = end
                pacer.put([piece], pacer.epoch)
        except BaseException as exc:  # (the caller hung up, or sent something wrong): raised to the reader
            pacer.close(exc)
        pacer.close()

    threading.Thread(target=read, name="live-audio", daemon=True).start()
    try:
        yield from pacer.out()
    finally:
        stop.set()
        pacer.close()
