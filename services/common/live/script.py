"""Speech from text as it is written (an LLM's reply, a chat message): spoken a sentence at a time,
so the face starts talking after the first sentence instead of after the whole text.

    script = LiveScript(speak)                   # speak(text) -> Speech: any TTS (in-process or the service;
                                                 # it gets text without tags)
    for piece in paced(text_pieces, script, lead_s=0.5):
        ...                                      # piece.audio, piece.emotions: one timeline, in order
    words, text = script.words, script.text      # for captions

A sentence is complete at . ! ? (captions' rules: "Dr. Smith" goes on) once the next word shows (or no
text comes for `tick_s`), or at a line break; a sentence still open after MAX_PIECE_CHARS is cut at its
last clause mark or space.
Emotion tags ("[happy]") and pause tags ("[pause 1]") work as in a script, also when a tag arrives
split across pieces. LLMs write Markdown: its marks are not read out (`speakable`). While the writer
is thinking, `paced` keeps the audio `lead_s` ahead of the wall clock with silence: a player never runs
dry and the face rests (blinks, breathes) in the pause. Speech goes out at most `speech_lead_s` ahead of
the clock, so that the user can speak over the avatar: an INTERRUPT item in the text stops it at once.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace

import numpy as np

from services.common import config
from services.common.domain.captions import _ends_sentence
from services.common.script.auto_emotion import with_auto_emotions
from services.common.script.auto_motion import with_auto_motions
from services.common.script.pauses import speak_with_pauses, split_pauses, strip_pauses
from services.common.script.tags import (MotionTag, ScriptTag, motions_seconds, near_misses, strip_tags,
                                         timed_emotions, timed_motions, with_room_for_motions)
from services.common.domain.errors import InputError
from services.common.live import pacing as live_pacing
from services.common.live.listening import Listen, Listening
from services.common.live.pacing import Interrupt, LivePiece
from services.common.domain.speech import Speech, Word, word_offsets

MAX_PIECE_CHARS = 300  # a sentence still open after this many characters is spoken in parts
MAX_TAG_CHARS = 40  # "[surprised 0.75]": a "[" further back than this is text, not a tag still arriving
_CLAUSE_MARK = re.compile(r"[,;:—–]\s")
_TAGS = re.compile(r"\[[^\]]*\]")
_MARKDOWN = [  # (pattern, replacement), in order: what a voice should say for an LLM's Markdown
    (re.compile(r"!?\[([^\]]*)\]\([^)]*\)"), r"\1"),  # [text](url), ![alt](src) -> text
    (re.compile(r"https?://(?:www\.)?([^/\s]+)\S*"), r"\1"),  # a bare URL -> its host
    (re.compile(r"^\s*(?:#{1,6}|>|[-*+•])\s+"), ""),  # heading, quote, bullet marks at the start
    (re.compile(r"\*\*|__|~~|[*`]"), ""),  # emphasis and code marks
]
_TRAILING_TAGS = re.compile(r"(?:\s*\[[^\]\[]*\]?)*\s*$")


class SentenceBuffer:
    """Text in any pieces -> whole sentences, as soon as each is known to be whole."""

    def __init__(self, max_chars: int = MAX_PIECE_CHARS) -> None:
        self.pending = ""
        self.max_chars = max_chars

    def push(self, text: str) -> list[str]:
        out = []
        for i in range(0, len(text), self.max_chars):  # (pending stays short, whatever one piece holds)
            self.pending += text[i:i + self.max_chars]
            while (cut := self._cut()) is not None:
                sentence, self.pending = self.pending[:cut].strip(), self.pending[cut:]
                if sentence:
                    out.append(sentence)
        return out

    def ended(self) -> list[str]:
        """The pending text, if it ends a sentence: when no more text comes for a while, nothing
        will tell that "back." ends one (the next word), so it is taken as ended."""
        body = _TRAILING_TAGS.sub("", self.pending)  # "Done. [happy] " -> "Done." ("[happy]" waits)
        words = body.split()
        if words and _ends_sentence(words[-1].rstrip("*_`~"), ""):
            self.pending = self.pending[len(body):]
            return [body.strip()]
        return []

    def flush(self) -> list[str]:
        rest, self.pending = self.pending.strip(), ""
        return [rest] if rest else []

    def _cut(self) -> int | None:
        """Where the first complete sentence of `pending` ends, or None."""
        text = self.pending
        start = text.rfind("[")
        open_tag = start > text.rfind("]") and len(text) - start <= MAX_TAG_CHARS
        limit = start if open_tag else len(text)  # never cut inside a tag still arriving
        newline = text.find("\n", 0, limit)
        for match in re.finditer(r"\S+", text[:limit]):
            if newline != -1 and match.start() > newline:
                break
            following = _TAGS.sub(" ", text[match.end():limit]).lstrip("*_`~# \t\r\n")  # "Done. [happy] **Next"
            if following and _ends_sentence(match.group().rstrip("*_`~"), following):
                return match.end()
        if newline != -1:
            return newline + 1
        if limit > self.max_chars:  # a run-on sentence: its last clause mark, else its last space
            window = text[:self.max_chars]
            marks = [m.end() for m in _CLAUSE_MARK.finditer(window)]
            space = window.rfind(" ")
            return marks[-1] if marks else (space + 1 if space > 0 else self.max_chars)
        return None


def speakable(text: str) -> str:
    """`text` without the Markdown marks an LLM writes: links and URLs become their text and host,
    heading/bullet/quote marks and emphasis/code marks go; the words stay."""
    for pattern, replacement in _MARKDOWN:
        text = pattern.sub(replacement, text)
    return " ".join(text.split())


class LiveScript:
    """Sentences spoken one after another on one timeline; `words` and `text` are what was said."""

    def __init__(self, speak: Callable[[str], Speech], *, field: str = "text", auto_emotion: bool = False,
                 auto_motions: bool = False) -> None:
        """`auto_emotion`: each sentence gets the emotion its words carry (services.common.script.auto_emotion);
        `auto_motions`: nods, shakes and tilts where it says yes, no or asks (services.common.script.auto_motion)."""
        self.speak, self.field = speak, field
        self.auto_emotion, self.auto_motions = auto_emotion, auto_motions
        self.sentences = SentenceBuffer()
        self.sample_rate: int | None = None
        self.duration = 0.0  # seconds of audio handed out so far
        self.words: list[Word] = []
        self.spoken: list[str] = []
        self._spans: list[tuple[float, int]] = []  # each spoken sentence's start and its first word's index
        self._reply = 0  # where in `spoken` the reply being spoken starts (after the last interrupt)
        self.warnings: list[str] = []  # mistyped tags (read out as text)
        self._tags: list[ScriptTag] = []  # tags written after the last words: they act on the next ones
        self._gap_due = False  # a sentence was spoken: the next one starts after a sentence pause

    @property
    def text(self) -> str:
        return " ".join(self.spoken)

    def push(self, text: str) -> Iterator[LivePiece]:
        for sentence in self.sentences.push(text):
            yield from self._say(sentence)

    def quiet(self) -> Iterator[LivePiece]:
        """No text came for a while: a sentence waiting only for the next word is spoken."""
        for sentence in self.sentences.ended():
            yield from self._say(sentence)

    def end(self) -> Iterator[LivePiece]:
        for sentence in self.sentences.flush():
            yield from self._say(sentence)
        # Motion tags after the last words ("Bye! [wink left]"): silence for them to play in.
        if (seconds := motions_seconds(self._tags)) and self.sample_rate is not None:
            piece = self.silence(seconds)
            piece.motions = [(piece.start_s, t.motion, t.strength) for t in self._tags if isinstance(t, MotionTag)]
            self._tags = []
            yield piece

    def interrupt(self, end_s: float) -> str:
        """Speech stopped at `end_s` on the timeline (see `paced`): the text not yet spoken and tags
        waiting for words are dropped, and what was said ends with the last word begun by then.
        Returns what was said of the interrupted reply (since the previous interrupt)."""
        self.sentences.pending = ""
        self._tags, self._gap_due = [], bool(self.spoken)  # (the next reply after a sentence pause)
        self.duration = min(self.duration, end_s)
        while self._spans and self._spans[-1][0] >= end_s:  # sentences that never started
            self._spans.pop()
            self.spoken.pop()
        first = self._spans[-1][1] if self._spans else 0
        heard = [w for w in self.words[first:] if w.start < end_s]
        if self._spans and len(heard) < len(self.words) - first:  # cut short: its text up to the next word
            if offsets := word_offsets(self.words[first:], self.spoken[-1]):
                cut = self.spoken[-1][:offsets[len(heard)]].rstrip()
            else:
                cut = " ".join(w.text for w in heard)
            self.spoken[-1] = cut.rstrip(",;:—–-") + "…"  # (trailing off: the captions' cue ends there)
        self.words = self.words[:first] + [replace(w, end=min(w.end, end_s)) for w in heard]
        said, self._reply = " ".join(self.spoken[self._reply:]), len(self.spoken)
        return said

    def know_rate(self) -> None:
        """Learns the voice's sample rate before anything is said (one short phrase spoken and dropped),
        so that the face can rest or listen in silence from the start."""
        if self.sample_rate is None:
            self.sample_rate = self.speak("Hello.").sample_rate

    def silence(self, seconds: float) -> LivePiece:
        if self.sample_rate is None:
            raise RuntimeError("silence before any speech: the sample rate is not known yet")
        piece = LivePiece(np.zeros(int(round(seconds * self.sample_rate)), np.float32), self.sample_rate,
                          self.duration)
        self.duration += len(piece.audio) / self.sample_rate
        self._gap_due = False  # (the silence is the pause)
        return piece

    def _say(self, sentence: str) -> Iterator[LivePiece]:
        text, tags = strip_tags(speakable(sentence), self.field)
        for warning in (f"{self.field}: {w}" for w in near_misses(text)):
            if warning not in self.warnings:
                self.warnings.append(warning)
        tags = [replace(t, offset=0) for t in self._tags] + tags
        if not strip_pauses(text):  # only tags: they act from the next words (pauses are silence)
            self._tags = tags
            seconds = _pause_seconds(text, self.field)
            if seconds and self.sample_rate is not None:
                yield self.silence(seconds)
            return
        self._tags = []
        if self.auto_emotion:
            tags = with_auto_emotions(text, tags, tag_first=True)
        if self.auto_motions:
            tags = with_auto_motions(text, tags)
        speech = speak_with_pauses(with_room_for_motions(text, tags), self.speak, self.field)
        if self.sample_rate is None:
            self.sample_rate = speech.sample_rate
        elif speech.sample_rate != self.sample_rate:
            raise RuntimeError(f"the voice changed its sample rate ({speech.sample_rate} != {self.sample_rate})")
        if self._gap_due:
            yield self.silence(config.get_float("LIKENESS_TTS_SENTENCE_SILENCE"))
        start = self.duration
        emotions = [(start + t, name, strength) for t, name, strength in timed_emotions(tags, speech.words, text)]
        motions = [(start + t, name, strength) for t, name, strength in timed_motions(tags, speech.words, text)]
        self._spans.append((start, len(self.words)))
        self.words += [Word(w.text, w.start + start, w.end + start) for w in speech.words]
        self.spoken.append(speech.text or text)
        self.duration += speech.duration
        self._gap_due = True
        yield LivePiece(np.asarray(speech.audio, np.float32).reshape(-1), speech.sample_rate, start, emotions,
                        motions)


def _pause_seconds(text: str, field: str) -> float:
    return sum(seconds for _, seconds in split_pauses(text, field))


def paced(text: Iterable[str | Interrupt | Listen], script: LiveScript, *, lead_s: float | None = None,
          speech_lead_s: float | None = None, tick_s: float = 0.2, clock: Callable[[], float] = time.monotonic,
          seed: int = 0, on_interrupt: Callable[[float, str], None] | None = None) -> Iterator[LivePiece]:
    """`script`'s pieces for `text` (read on its own thread: it may block, like a network stream),
    spoken on another thread and handed out in live_pacing.CHUNK_S pieces at most `speech_lead_s`
    (LIKENESS_LIVE_SPEECH_LEAD_S) ahead of the clock, so that an INTERRUPT item in `text` stops the
    speech within about that: what has not gone out is dropped (the text still waiting too), the
    speech fades out, the captions end with the last word heard, and the text after it is spoken next;
    `on_interrupt(time_code, heard_text)` is told where it cut and what of the reply was said.
    After an interrupt, or from a LISTEN item, the resting face listens (services.common.live.listening)
    until STOP_LISTENING or its next words; a stream that starts with LISTEN (the user talks first)
    shows the face listening at once.
    From the first words on, while no sentence is ready, silence keeps the audio `lead_s`
    (LIKENESS_LIVE_IDLE_LEAD_S) ahead of the clock; 0: no silence, the video waits for the text."""
    lead_s = config.get_float("LIKENESS_LIVE_IDLE_LEAD_S") if lead_s is None else lead_s
    pacer = live_pacing.paced_by(speech_lead_s, clock)
    inbox: queue.Queue = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            for item in text:
                if stop.is_set():
                    return
                if isinstance(item, Interrupt):  # cut at once, not after the sentence being spoken now
                    end = pacer.cut()
                    inbox.put(("interrupt", end, pacer.epoch))
                elif isinstance(item, Listen):
                    inbox.put(("listen", item.on, pacer.epoch))
                else:  # (with the epoch it was written in: if a cut follows, what it says is dropped)
                    inbox.put(("text", item, pacer.epoch))
            inbox.put(("end", None, pacer.epoch))
        except BaseException as exc:  # (the caller hung up, or sent something wrong): raised below
            inbox.put(("error", exc, None))

    listening = Listening(seed)

    def spoken(pieces: Iterable[LivePiece]) -> Iterator[LivePiece]:
        for piece in pieces:  # the avatar talks: it is not listening now
            listening.stop()
            yield piece

    def speak() -> None:
        epoch = 0  # the epoch of the text the script has taken in so far
        try:
            while True:
                idling = (pacer.received or listening.on) and lead_s > 0  # (from the first words, or listening)
                try:
                    kind, value, item_epoch = inbox.get(
                        timeout=tick_s if idling or script.sentences.pending.strip() else None)
                except queue.Empty:  # the writer is thinking
                    pacer.put(spoken(script.quiet()), epoch)
                    started_at = pacer.started_at  # (None: nothing out yet, all of it is ahead)
                    ahead = script.duration - (0.0 if started_at is None else clock() - started_at)
                    if idling and ahead < lead_s:
                        rest = script.silence(lead_s - ahead + tick_s)
                        rest.idle = True
                        rest.motions = listening.motions(rest.start_s, script.duration)
                        pacer.put([rest], epoch)
                    continue
                if kind == "error":
                    raise value
                if kind == "stop":
                    return
                epoch = item_epoch
                if kind == "interrupt":
                    heard = script.interrupt(value)
                    listening.start(script.duration)  # (the user is talking)
                    if on_interrupt is not None:
                        on_interrupt(value, heard)
                    continue
                if kind == "listen":
                    if value:
                        script.know_rate()  # (a stream may start with the user talking)
                        listening.start(script.duration)
                    else:
                        listening.stop()
                    continue
                pacer.put(spoken(script.push(value) if kind == "text" else script.end()), epoch)
                if kind == "end":
                    if not pacer.received:
                        raise InputError(script.field, "nothing was said (no text with words in it)")
                    break
        except BaseException as exc:
            pacer.close(exc)
        pacer.close()

    threading.Thread(target=read, name="live-text", daemon=True).start()
    threading.Thread(target=speak, name="live-speech", daemon=True).start()
    try:
        yield from pacer.out()
    finally:
        stop.set()
        inbox.put(("stop", None, None))
        pacer.close()
