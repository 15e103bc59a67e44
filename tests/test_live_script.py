"""Text as it is written -> speech a sentence at a time (services.common.live.script), with the real
in-process TTS: where sentences are cut, one timeline for all of them, tags, and silence while the
writer thinks."""
from __future__ import annotations

import time

import numpy as np
import pytest

from services.common.domain.errors import InputError
from services.common.live.pacing import INTERRUPT
from services.common.live.script import MAX_PIECE_CHARS, LiveScript, SentenceBuffer, paced, speakable

TEXT = ("Hello there. I met Dr. Smith at 3.30 p.m. today! [hap" "py] Great news. [pause 1] "
        "Was it \"real\"? Yes\nNo more")
SENTENCES = ["Hello there.", "I met Dr. Smith at 3.30 p.m. today!", "[happy] Great news.",
             "[pause 1] Was it \"real\"?", "Yes", "No more"]


@pytest.mark.parametrize("size", [1, 3, 7, len(TEXT)])
def test_sentences_are_cut_where_they_end_whatever_the_pieces(size):
    buffer = SentenceBuffer()
    out = []
    for i in range(0, len(TEXT), size):
        out += buffer.push(TEXT[i:i + size])
    assert out == SENTENCES[:-1]  # the last one has no end yet
    assert buffer.flush() == ["No more"] and buffer.flush() == []


def test_a_sentence_waits_for_the_next_word_or_a_quiet_moment():
    buffer = SentenceBuffer()
    assert buffer.push("It is done. ") == []  # "done. Smith" or "done. next"? not known yet
    assert buffer.push("and more. ") == []  # (a lower-case word goes on)
    assert buffer.ended() == ["It is done. and more."]
    assert buffer.push("Ask Dr. ") == [] and buffer.ended() == []  # an abbreviation does not end one
    assert buffer.push("Smith [ha") == [] and buffer.ended() == []  # nor a tag still arriving
    assert buffer.push("ppy] now.") == [] and buffer.ended() == ["Ask Dr. Smith [happy] now."]
    assert buffer.push("Bye. [sad") == [] and buffer.ended() == ["Bye."]  # the tag waits for its words
    assert buffer.push("] See you.\n") == ["[sad] See you."]


def test_one_huge_piece_is_cut_in_bounded_time():
    buffer = SentenceBuffer()
    t0 = time.monotonic()
    out = buffer.push("word " * 200_000 + "[ never closed " + "more " * 1000)  # 1 MB, no sentence ends
    assert time.monotonic() - t0 < 5.0 and len(out) > 3000 and max(map(len, out)) <= MAX_PIECE_CHARS


def test_a_run_on_sentence_is_spoken_in_parts():
    buffer = SentenceBuffer()
    clause = "and the road went on past the river, "
    out = buffer.push(clause * 20)
    assert out and all(len(s) <= MAX_PIECE_CHARS for s in out)
    assert all(s.endswith(",") for s in out)  # cut at clause marks, not inside words
    words = " ".join(out + buffer.flush()).split()
    assert words == (clause * 20).split()


def test_an_llms_markdown_is_not_read_out():
    assert speakable("## **Plan** for `today`") == "Plan for today"
    assert speakable("- See [the docs](https://x.io/a/b) or https://www.example.com/p?q=1 now.") == \
        "See the docs or example.com now."
    assert speakable("> [happy] *Quoted*, snake_case kept.") == "[happy] Quoted, snake_case kept."
    buffer = SentenceBuffer()  # emphasis around a sentence's end does not hide it
    assert buffer.push("**Done.** **Next** one. ## Title\n- item") == ["**Done.**", "**Next** one.", "## Title"]


@pytest.fixture(scope="module")
def speak():
    from services.tts import TextToSpeech

    tts = TextToSpeech()
    return lambda text: tts.synthesize(text, seed=1)


def test_sentences_share_one_timeline_with_their_tags_and_pauses(speak):
    script = LiveScript(speak)
    pieces = []
    for i in range(0, len(TEXT), 4):
        pieces += script.push(TEXT[i:i + 4])
    pieces += script.end()
    rate = script.sample_rate
    starts = np.cumsum([0.0] + [len(p.audio) / rate for p in pieces])
    assert np.allclose([p.start_s for p in pieces], starts[:-1]) and abs(starts[-1] - script.duration) < 1e-9
    assert script.text == "Hello there. I met Dr. Smith at 3.30 p.m. today! Great news. Was it \"real\"? Yes No more"
    words = [w.text for w in script.words]
    assert words[:3] == ["Hello", "there", "I"] and words[-2:] == ["No", "more"]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(script.words, script.words[1:]))
    # each word is heard where the timeline says: loud inside the words, quiet between sentences
    audio = np.concatenate([p.audio for p in pieces])
    great = next(w for w in script.words if w.text == "Great")
    assert [e for p in pieces for e in p.emotions] == [(pytest.approx(next(
        p.start_s for p in pieces if p.emotions)), "happy", 1.0)]
    assert next(p.start_s for p in pieces if p.emotions) <= great.start < next(p.start_s for p in pieces if p.emotions) + 0.3

    def loudness(a, b):
        return float(np.sqrt(np.mean(audio[int(a * rate):int(b * rate)] ** 2)))

    news = next(w for w in script.words if w.text == "news")
    was = next(w for w in script.words if w.text == "Was")
    assert was.start - news.end > 1.0  # the [pause 1] between the sentences
    assert loudness(news.end + 0.2, was.start - 0.2) < 0.1 * loudness(great.start, news.end)


def test_markdown_is_spoken_as_words_and_captioned_without_marks(speak):
    script = LiveScript(speak)
    list(script.push("# Results\n**Great** news: see [the report](https://example.com/r/1).\n"))
    assert [w.text for w in script.words] == ["Results", "Great", "news", "see", "the", "report"]
    assert script.text == "Results Great news: see the report."


def test_tags_alone_act_on_the_next_words_and_bad_tags_name_the_field(speak):
    script = LiveScript(speak)
    assert list(script.push("[sad 0.5]\n")) == []  # nothing to say yet, nothing known of the rate
    first = list(script.push("Oh no.\n"))
    assert first[0].emotions == [(0.0, "sad", 0.5)]
    # a motion tag alone waits for the next words too; in a sentence it lands on its word
    assert list(script.push("[shake]\n")) == []
    second = list(script.push("Not [nod 0.5] that one.\n"))
    start = second[-1].start_s  # (after the sentence pause)
    spoken = [w for w in script.words if w.start >= start - 1e-9]
    that = next(w for w in spoken if w.text == "that")
    assert [(m, s) for _, m, s in second[-1].motions] == [("shake", 1.0), ("nod", 0.5)]
    assert second[-1].motions[0][0] == pytest.approx(max(spoken[0].start - 0.1, start))
    assert second[-1].motions[1][0] == pytest.approx(that.start - 0.1)
    list(script.push("Oh [sadd] well.\n"))  # a mistyped tag is read out, with a warning
    assert script.warnings == ["text: [sadd] is not a tag (did you mean [sad]?): it is read out as text"]
    with pytest.raises(InputError) as info:
        list(script.push("Fine [happy 3] then.\n"))
    assert info.value.field == "text" and "strength" in info.value.message


def test_the_face_rests_in_silence_while_the_writer_thinks(speak):
    import threading

    for lead in (0.5, 0.0):
        first_out = threading.Event()  # (the clock runs from the first speech out, however long TTS took)

        def writer():
            yield "Hello there. "
            first_out.wait(30)
            time.sleep(3.0)
            yield "Still here."

        script, pieces = LiveScript(speak), []
        for piece in paced(writer(), script, lead_s=lead):
            if not pieces:
                t0 = time.monotonic()
                first_out.set()
            pieces.append(piece)
        elapsed = time.monotonic() - t0
        silent = [p for p in pieces if p.idle]
        if lead:
            # the audio kept pace with the clock: it covers the wait, and about lead more
            assert len(silent) >= 5 and not any(np.any(p.audio) for p in silent)
            assert script.duration >= elapsed - 0.3, (script.duration, elapsed)
            assert script.words[-2].start - script.words[1].end > 2.5
        else:
            assert not any(p.idle for p in pieces)  # only the sentence pause is silent
            assert script.duration < elapsed - 1.0  # (the video would wait for the text)


def test_nothing_said_and_a_broken_source_are_errors(speak):
    with pytest.raises(InputError) as info:
        list(paced(iter(["   ", "[happy]"]), LiveScript(speak), lead_s=0.5))
    assert info.value.field == "text" and "nothing was said" in info.value.message

    def broken():
        yield "Hello there. "
        raise ConnectionError("the writer went away")

    with pytest.raises(ConnectionError):
        list(paced(broken(), LiveScript(speak), lead_s=0.5))


def test_auto_emotion_tags_each_sentence_as_it_is_spoken(speak):
    script = LiveScript(speak, auto_emotion=True)
    pieces = list(script.push("We won the cup, what a wonderful day! The bus leaves at nine. [sad] It is late. "))
    pieces += list(script.end())
    said = [p for p in pieces if p.emotions]
    assert [e[1] for p in said for e in p.emotions] == ["happy", "neutral", "sad"]  # the writer's tag kept
    assert all(p.start_s <= p.emotions[0][0] < p.start_s + 0.5 for p in said)


def test_a_motion_after_the_last_words_plays_in_silence_at_the_end(speak):
    script = LiveScript(speak)
    pieces = list(script.push("See you soon! [wink left]")) + list(script.end())  # tag in the last sentence
    (at, motion, _), = [m for p in pieces for m in p.motions]
    assert motion == "wink_left" and at == pytest.approx(script.words[-1].end)
    assert script.duration >= at + 0.5  # room to play in, as silence
    script = LiveScript(speak)
    pieces = list(script.push("See you soon!\n[nod]\n")) + list(script.end())  # a tag alone after it
    last = pieces[-1]
    assert last.motions == [(pytest.approx(last.start_s), "nod", 1.0)] and last.start_s > script.words[-1].end
    assert not np.any(last.audio) and len(last.audio) / last.sample_rate == pytest.approx(0.9, abs=0.01)


def test_speech_goes_out_at_most_the_lead_ahead_of_the_clock(speak):
    script, sent = LiveScript(speak), []
    t0 = time.monotonic()
    for piece in paced(iter(["The quick brown fox jumps over the lazy dog, and then it runs far away. "]), script,
                       lead_s=0.5, speech_lead_s=0.6):
        sent.append((time.monotonic() - t0, piece.start_s, len(piece.audio) / piece.sample_rate))
    assert script.duration > 3.0 and max(length for _, _, length in sent) <= 0.1 + 1e-6  # in CHUNK_S pieces
    sent = [(at - sent[0][0], start, length) for at, start, length in sent]  # (the clock starts with the speech)
    # each piece leaves no later than when it starts playing minus the lead (a little slack for the CPU) ...
    assert all(at <= max(start - 0.6, 0) + 0.3 for at, start, _ in sent)
    # ... and no earlier: the speech is not all handed out at once
    assert all(at >= start - 0.6 - 0.05 for at, start, _ in sent), [(a, s) for a, s, _ in sent if a < s - 0.65]
    assert sent[-1][0] > script.duration - 1.0


def test_an_interrupt_stops_the_speech_and_the_next_reply_follows(speak):
    import threading

    barged_in = threading.Event()

    def writer():
        yield ("[happy] This is a long answer that goes on and on about the weather in the hills. "
               "[nod] Then a second sentence that nobody will hear. ")
        barged_in.wait(timeout=30)
        yield INTERRUPT
        time.sleep(3.5)  # the user talks: the avatar listens
        yield "[sad] Sorry, go on. "

    script, pieces, told = LiveScript(speak), [], []
    for piece in paced(writer(), script, lead_s=0.5, speech_lead_s=0.5,
                       on_interrupt=lambda *args: told.append(args)):
        pieces.append(piece)
        if piece.start_s >= 1.0 and not barged_in.is_set():
            barged_in.set()
            stopped_near = piece.start_s + 0.5 + 0.2  # the lead, and the pieces that left meanwhile
    said = [w.text for w in script.words]
    assert said[:3] == ["This", "is", "a"] and said[-3:] == ["Sorry", "go", "on"]
    assert "nobody" not in said and "hills" not in said  # the rest of the answer was never spoken
    assert script.text.startswith("This is a long answer") and script.text.endswith("Sorry, go on.")
    assert "hills" not in script.text and "nobody" not in script.text
    (time_code, heard), = told  # what the agent keeps in its chat history: the reply as far as it was heard
    assert heard.startswith("This is a long answer") and heard.endswith("…") and script.text.startswith(heard[:-1])
    sorry = said.index("Sorry")
    cut = script.words[sorry - 1].end  # the last word begun before the interrupt ends the first reply
    assert cut <= time_code <= stopped_near + 0.05
    rate = pieces[0].sample_rate
    audio = np.concatenate([p.audio for p in pieces])
    assert len(audio) / rate == pytest.approx(script.duration, abs=1e-3)  # one timeline, no gaps or overlaps
    reply = next(p.start_s for p in pieces if p.start_s >= cut and np.any(p.audio))
    gap = audio[int((cut + 0.001) * rate):int(reply * rate)]
    assert len(gap) >= 0.19 * rate and not np.any(gap)  # silence until then (at least a sentence pause)
    fade, = [p for p in pieces if len(p.audio) == int(0.02 * rate)]  # the speech fades out instead of clicking
    assert fade.start_s < cut + 0.021 and np.abs(fade.audio[-10:]).max() <= 0.05 * np.abs(fade.audio).max() + 1e-6
    emotions = [e[1] for p in pieces for e in p.emotions]
    motions = [m[1] for p in pieces for m in p.motions]
    assert emotions == ["happy", "sad"] and "nod" in motions  # the dropped sentence's nod went with it, but ...
    listened = [m for p in pieces for m in p.motions]  # ... while the user talked the avatar listened
    assert all(cut <= t < reply and p.idle for p in pieces for t, _, _ in p.motions), (listened, cut, reply)
    assert {"raise_brows", "nod"} <= {name for _, name, _ in listened} and all(s <= 0.6 for *_, s in listened)


def test_text_before_an_interrupt_that_was_not_yet_heard_is_never_heard(speak):
    script = LiveScript(speak)
    told = []
    pieces = list(paced(iter(["Hello there. How are you today? ", INTERRUPT, "Bye now."]), script, lead_s=0.5,
                        speech_lead_s=0.5, on_interrupt=lambda *args: told.append(args)))
    assert told == [(0.0, "")]
    assert [w.text for w in script.words] == ["Bye", "now"] and script.text == "Bye now."
    assert script.words[0].start < 0.3  # from the start: nothing before it was heard
    assert len(np.concatenate([p.audio for p in pieces])) / script.sample_rate == pytest.approx(script.duration, abs=1e-3)


def test_a_stream_that_starts_with_the_user_talking_shows_the_face_listening_at_once(speak):
    from services.common.live.listening import LISTEN

    def writer():
        yield LISTEN  # the user talks first
        time.sleep(2.0)
        yield "Hello there. "  # the agent's first reply

    script, pieces, t0 = LiveScript(speak), [], time.monotonic()
    for piece in paced(writer(), script, lead_s=0.5):
        pieces.append((time.monotonic() - t0, piece))
    first_at, first = pieces[0]
    assert first.idle and first.start_s == 0.0 and first_at < 1.5  # out before any words (a TTS probe first)
    listened = [m for _, p in pieces for m in p.motions]
    assert {"raise_brows", "nod"} <= {name for _, name, _ in listened}
    assert all(t < script.words[0].start for t, _, _ in listened)  # ... until the agent talks
    assert [w.text for w in script.words] == ["Hello", "there"] and script.words[0].start > 1.0


def test_the_cli_reads_interrupts_and_listening_from_control_bytes_on_stdin(monkeypatch):
    """`likeness live --text-in -`: CAN (0x18) interrupts, DC1 / DC3 (0x11 / 0x13) say the user started /
    stopped talking; the text around them goes on as written, also when a byte arrives alone."""
    import argparse
    import os
    import sys

    from services.cli.live import live_text
    from services.common.live.listening import LISTEN, STOP_LISTENING

    read, write = os.pipe()
    os.write(write, "Hello the\x18re.\x11".encode())
    os.write(write, b"\x13")
    os.write(write, "Héllo ag".encode() + "ain.".encode())
    os.close(write)
    monkeypatch.setattr(sys, "stdin", os.fdopen(read, "rb"))
    items = [item for item in live_text(argparse.Namespace(text_in="-")) if item != ""]
    assert items[:5] == ["Hello the", INTERRUPT, "re.", LISTEN, STOP_LISTENING], items
    assert "".join(i for i in items[5:] if isinstance(i, str)) == "Héllo again.", items
