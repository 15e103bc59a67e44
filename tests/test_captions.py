"""Captions (WebVTT / SRT) cut from the script and timed by the spoken words: the rules on made-up
timings, then on the real TTS voice, and the CLI's checks."""
from __future__ import annotations

import re

from services.common.domain.captions import MAX_CUE_SECONDS, MAX_LINE_CHARS, build_cues, to_srt, to_webvtt
from services.common.domain.speech import Word
from tests.test_pipeline import PHOTOS, ROOT, run_cli

TEXT = 'Hello, world! It is 3 p.m. today. Dr. Smith paid $5 for twenty-one apples; "really?" she asked.'
# (word, start, end) as the TTS reports them: bare, punctuation stripped
WORDS = [Word(*w) for w in [
    ("Hello", 0.02, 0.36), ("world", 0.57, 0.92), ("It", 1.35, 1.42), ("is", 1.42, 1.56), ("3", 1.56, 1.85),
    ("p.m", 1.85, 2.24), ("today", 2.64, 2.98), ("Dr", 3.4, 3.82), ("Smith", 4.27, 4.52), ("paid", 4.52, 4.72),
    ("$5", 4.72, 5.37), ("for", 5.37, 5.54), ("twenty-one", 5.54, 6.11), ("apples", 6.11, 6.55),
    ("really", 6.79, 7.07), ("she", 7.49, 7.63), ("asked", 7.63, 8.06)]]


def test_cues_keep_the_scripts_punctuation_and_break_at_sentences():
    cues = build_cues(WORDS, TEXT, duration=8.3)
    assert [c.text for c in cues] == ["Hello, world!", "It is 3 p.m. today.",
                                      'Dr. Smith paid $5 for twenty-one\napples; "really?" she asked.']
    assert [c.start for c in cues] == [0.02, 1.35, 3.4]  # each cue appears with its first word
    assert cues[0].end == 1.35  # held after "world", but never over the next cue
    assert cues[-1].end == 8.3  # the last one is held, but not past the audio


def test_long_text_is_split_into_readable_cues():
    words, text, t = [], [], 0.0
    for i in range(60):  # one long sentence, no pauses
        word = f"word{i}"
        words.append(Word(word, t, t + 0.3))
        text.append(word)
        t += 0.32
    cues = build_cues(words, " ".join(text) + ".")
    assert len(cues) > 3
    assert " ".join(c.text.replace("\n", " ") for c in cues) == " ".join(text) + "."
    for c in cues:
        lines = c.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= MAX_LINE_CHARS for line in lines), c
        assert c.end - c.start <= MAX_CUE_SECONDS + 0.5, c
    assert all(a.end <= b.start for a, b in zip(cues, cues[1:]))


def test_a_long_pause_starts_a_new_cue_and_foreign_words_fall_back_to_the_bare_words():
    words = [Word("one", 0.0, 0.3), Word("two", 0.35, 0.6), Word("three", 1.6, 1.9)]
    assert [c.text for c in build_cues(words, "one two three")] == ["one two", "three"]
    # a timeline from another text: the bare words, still timed
    assert [c.text for c in build_cues(words, "something else entirely")] == ["one two", "three"]
    assert build_cues([], "nothing was said") == []


def test_webvtt_and_srt_formats():
    cues = build_cues(WORDS, TEXT, duration=8.3)
    vtt, srt = to_webvtt(cues), to_srt(cues)
    assert vtt.startswith("WEBVTT\n\n1\n00:00:00.020 --> 00:00:01.350\nHello, world!\n\n")
    assert srt.startswith("1\n00:00:00,020 --> 00:00:01,350\nHello, world!\n\n")
    stamp = r"\d\d:\d\d:\d\d[.,]\d\d\d"
    for doc in (vtt, srt):
        assert len(re.findall(rf"^{stamp} --> {stamp}$", doc, re.M)) == len(cues)


def test_captions_of_real_speech_follow_its_words():
    """The bundled voice speaking a script with numbers, abbreviations and quotes."""
    from services.common.infra.inference import InProcessClient
    from services.tts import TextToSpeech
    from services.tts.tensor_model import ModelVoice

    speech = TextToSpeech(voice=ModelVoice(InProcessClient())).synthesize(TEXT, seed=0)
    cues = build_cues(speech.words, speech.text, speech.duration)
    assert " ".join(c.text.replace("\n", " ") for c in cues) == TEXT
    starts = [round(w.start, 3) for w in speech.words]
    assert all(c.start in starts for c in cues) and cues[-1].end <= speech.duration


def test_cli_captions_checks(tmp_path):
    out = tmp_path / "o.mp4"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hello.",
                   "--out", str(out), "--captions", str(tmp_path / "c.txt"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: captions:"), proc.stderr
    assert not out.exists()
    recording = ROOT / "tests" / "data" / "librivox" / "sense_and_sensibility_01_austen_64kb-0930.wav"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--audio", str(recording),
                   "--out", str(out), "--captions", str(tmp_path / "c.vtt"))
    assert proc.returncode == 2 and proc.stderr.startswith("error: captions:") and "transcript" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_cli_writes_srt(tmp_path):
    out, captions = tmp_path / "o.mp4", tmp_path / "c.srt"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hi there. Bye now.",
                   "--out", str(out), "--size", "128", "--captions", str(captions))
    assert proc.returncode == 0, proc.stderr
    assert captions.read_text().startswith("1\n00:00:00,") and "Hi there.\n\n2\n" in captions.read_text()


def test_burned_captions_draw_each_cue_only_while_it_is_on():
    import numpy as np

    from services.common.domain.captions import Cue
    from services.render.caption_overlay import CaptionOverlay

    cues = [Cue(0.5, 1.5, "Hello there,\nmy friend."), Cue(2.0, 3.0, "A much longer line of words that must be "
                                                                       "wrapped to fit a narrow frame.")]
    overlay = CaptionOverlay(cues, (288, 512))
    base = np.full((512, 288, 3), 90, np.uint8)
    assert np.array_equal(overlay.apply(base.copy(), 0.2), base)  # before the first cue: untouched
    on = overlay.apply(base.copy(), 1.0)
    changed = np.abs(on.astype(int) - base).max(axis=2) > 0
    rows, cols = np.nonzero(changed)
    assert rows.min() > 0.6 * 512 and rows.max() < 0.95 * 512  # near the bottom, above the margin
    assert abs((cols.min() + cols.max()) / 2 - 144) < 6  # centred
    assert (on[changed] >= 250).all(axis=1).sum() > 200 and (on[changed] <= 40).all(axis=1).sum() > 200  # white, outlined
    wrapped = np.abs(overlay.apply(base.copy(), 2.5).astype(int) - base).max(axis=2) > 0
    assert wrapped[:, :2].sum() == 0 and wrapped[:, -2:].sum() == 0  # re-wrapped inside the frame
    rgba = np.zeros((512, 288, 4), np.uint8)  # a transparent frame: the text is made opaque
    assert overlay.apply(rgba, 1.0)[..., 3].max() == 255


def test_cli_burns_captions_into_the_video(tmp_path):
    import numpy as np

    from tests.video_instrument import decode

    plain, burned = tmp_path / "plain.mp4", tmp_path / "burned.mp4"
    for out, extra in ((plain, []), (burned, ["--burn-captions"])):
        proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hello there, my friend.",
                       "--out", str(out), "--size", "256", *extra)
        assert proc.returncode == 0, proc.stderr
    a, b = decode(plain).frames, decode(burned).frames
    mid = len(a) // 2
    diff = np.abs(a[mid].astype(int) - b[mid].astype(int)).max(axis=2) > 40
    assert diff[int(0.6 * 256):].sum() > 300 and diff[:int(0.5 * 256)].sum() == 0  # text at the bottom only
    recording = ROOT / "tests" / "data" / "librivox" / "sense_and_sensibility_01_austen_64kb-0930.wav"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--audio", str(recording),
                   "--out", str(tmp_path / "x.mp4"), "--burn-captions")
    assert proc.returncode == 2 and proc.stderr.startswith("error: burn_captions:"), proc.stderr
