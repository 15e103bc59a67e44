"""Live audio handed on at the pace it is heard (services.common.live.pacing): pushed faster than real
time it waits at most the lead ahead of the clock, an interrupt drops what has not gone out (the voice
fading out) and the audio after it continues the timeline where the speech stopped."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from services.common.live.pacing import CHUNK_S, FADE_S, INTERRUPT, LivePiece, paced_audio

RATE = 16000


def tone(seconds: float, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (level * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_audio_pushed_fast_waits_the_lead_ahead_of_the_clock_and_real_time_audio_does_not():
    sent = []
    for piece in paced_audio(iter([tone(3.0)]), RATE, lead_s=0.5):
        sent.append((time.monotonic(), piece.start_s, len(piece.audio)))
    t0 = sent[0][0]
    assert sum(n for *_, n in sent) == 3 * RATE and max(n for *_, n in sent) <= CHUNK_S * RATE
    assert all(start - 0.5 - 0.05 <= at - t0 <= max(start - 0.5, 0) + 0.15 for at, start, _ in sent)

    def microphone():  # 20 ms pieces as they are spoken: never held
        for k in range(50):
            time.sleep(0.02)
            yield tone(0.02)

    arrived = []
    start = time.monotonic()
    for piece in paced_audio(microphone(), RATE, lead_s=0.5):
        arrived.append(time.monotonic() - start - (piece.start_s + len(piece.audio) / RATE))
    assert max(arrived) < 0.05, max(arrived)  # each out right after it was spoken


def test_the_first_speech_goes_at_once_then_the_lead_holds(monkeypatch):
    """From the configured lead (no `lead_s`): the stream's first START_LEAD_S goes out at once (the
    face's first frame needs audio well ahead of it), the rest at most the lead ahead of the clock."""
    from services.common.live.pacing import START_LEAD_S

    monkeypatch.setenv("LIKENESS_LIVE_SPEECH_LEAD_S", "0.5")
    sent = []
    for piece in paced_audio(iter([tone(START_LEAD_S + 1.5)]), RATE):
        sent.append((time.monotonic(), piece.start_s))
    t0 = sent[0][0]
    assert all(at - t0 < 0.15 for at, start in sent if start <= START_LEAD_S + 1e-6)  # at once
    later = [(at - t0, start) for at, start in sent if start > START_LEAD_S + 1e-6]
    assert later and all(start - 0.5 - 0.05 <= at <= start - 0.5 + 0.15 for at, start in later), later


def test_an_interrupt_drops_what_was_not_heard_and_the_next_audio_follows_on():
    barge, told = threading.Event(), []

    def agent():
        yield tone(5.0)  # a whole reply at once, as an agent's TTS delivers it
        yield LivePiece(np.zeros(0, np.float32), RATE, 0.0, motions=[(4.0, "nod", 1.0)])  # (never reached)
        barge.wait(30)
        yield INTERRUPT
        yield tone(1.0, level=0.25)  # the next reply

    pieces = []
    for piece in paced_audio(agent(), RATE, lead_s=0.4, on_interrupt=lambda *a: told.append(a)):
        pieces.append(piece)
        if piece.start_s >= 0.5 and not barge.is_set():
            barge.set()
    (cut, heard), = told
    assert heard == "" and 0.5 < cut < 0.5 + 0.4 + 0.3, cut  # within the lead of where the player was
    audio = np.concatenate([p.audio for p in pieces])
    assert len(audio) == pytest.approx((cut + 1.0) * RATE, abs=2)  # the rest of the 5 s never went out
    assert [p.start_s for p in pieces] == sorted(p.start_s for p in pieces)  # one timeline
    fade = audio[int((cut - FADE_S) * RATE):int(cut * RATE)]
    assert np.abs(fade[-8:]).max() < 0.05 and np.abs(fade[:len(fade) // 2]).max() > 0.2  # faded out, no click
    assert np.abs(audio[int(cut * RATE):]).max() == pytest.approx(0.25, abs=0.01)  # then the next reply
    assert not [m for p in pieces for m in p.motions]  # the nod queued after the cut went with it


def test_a_broken_source_is_raised_to_the_reader():
    def broken():
        yield tone(0.2)
        raise ConnectionError("the caller went away")

    with pytest.raises(ConnectionError):
        list(paced_audio(broken(), RATE, lead_s=0.5))


def test_a_listening_face_nods_now_and_then_until_it_talks_again():
    from services.common.live.listening import LISTEN, STOP_LISTENING, Listening

    listening = Listening(seed=3)
    assert listening.motions(0.0, 10.0) == []  # not listening: nothing
    listening.start(2.0)
    first = listening.motions(2.0, 2.1)
    assert sorted(name for _, name, _ in first) == ["raise_brows", "tilt_left"] or \
        sorted(name for _, name, _ in first) == ["raise_brows", "tilt_right"]
    nods = [m for k in range(21, 200) for m in listening.motions(k / 10, (k + 1) / 10)]
    times = [t for t, _, _ in nods]
    assert all(name == "nod" and 0.35 <= s <= 0.6 for _, name, s in nods) and len(nods) >= 4
    assert 2.8 <= times[0] <= 3.6 and all(2.2 <= b - a <= 4.0 for a, b in zip(times, times[1:]))
    listening.stop()
    assert listening.motions(20.0, 40.0) == []
    replay = Listening(seed=3)
    replay.start(2.0)
    assert [m for k in range(20, 200) for m in replay.motions(k / 10, (k + 1) / 10)] == first + nods  # seeded

    def caller():  # silence while the user talks, as a voice agent sends it
        yield tone(0.5, level=0.0)
        yield LISTEN
        for _ in range(40):
            yield tone(0.1, level=0.0)
        yield STOP_LISTENING
        yield tone(3.0, level=0.0)

    pieces = list(paced_audio(caller(), RATE, lead_s=0.0, seed=1))
    motions = [m for p in pieces for m in p.motions]
    assert motions and all(0.5 <= t < 4.5 for t, _, _ in motions)  # only while listening
    assert [name for _, name, _ in motions].count("nod") >= 1
