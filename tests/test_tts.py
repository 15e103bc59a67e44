"""TTS stage: real espeak-ng + the real neural voice, checked against the independent forced aligner."""
from __future__ import annotations

import difflib
import unicodedata

import numpy as np
import pytest

from services.common.domain.errors import InputError
from services.tts import TextToSpeech, read_wav, write_wav
from services.tts.align import align
from services.tts.phonemize import clean_text, label_words, phonemize, split_clauses
from services.tts.phones import PHONES, SILENCE, group_phones, ipa_to_arpabet, is_vowel, syllable_stress
from services.tts.voice import HOP_LENGTH

TEXT = "Hello there! My name is Grace, and I build computers. Would you like to see one of them?"
BILABIALS = ("p", "b", "m")
# Sentences the timing rules were NOT tuned on, rich in bilabials and word onsets.
CHECK_TEXTS = (
    "Maybe Bob will pay me back before the big game on Monday.",
    "The museum opens at nine, but the best exhibits are upstairs.",
    "Please put the empty boxes by the back door, and bring me a pen.",
    "A bright moon appeared above the calm water of the bay.",
)


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    return TextToSpeech()


@pytest.fixture(scope="module")
def speech(tts):
    return tts.synthesize(TEXT, seed=7)


# ---------------------------------------------------------------------------------- timeline


def test_timeline_covers_the_audio_without_gaps(speech):
    assert speech.audio.dtype == np.float32 and speech.sample_rate == 22050
    assert speech.text == TEXT
    peak = float(np.abs(speech.audio).max())
    assert abs(20 * np.log10(peak) + 1.0) < 0.05  # peak-normalised to -1 dBFS
    phones = speech.phones
    assert phones[0].start == 0.0
    assert abs(phones[-1].end - speech.duration) <= HOP_LENGTH / speech.sample_rate
    for prev, cur in zip(phones, phones[1:]):
        assert cur.start == pytest.approx(prev.end, abs=1e-9) and cur.end > cur.start
        assert not (prev.symbol == SILENCE and cur.symbol == SILENCE)  # pauses are merged
    assert {p.symbol for p in phones} <= PHONES
    assert any(p.stress == 1 and is_vowel(p.symbol) for p in phones)
    assert any(p.stress == 0 and is_vowel(p.symbol) for p in phones)
    # Punctuation is a pause: four sentence/clause marks -> at least 3 inner silences.
    inner = [p for p in phones[1:-1] if p.symbol == SILENCE]
    assert len(inner) >= 3 and all(p.word_index == -1 for p in inner)


def test_words_match_the_script_and_own_their_phones(speech):
    assert [w.text for w in speech.words] == [w for ws, _ in split_clauses(clean_text(TEXT)) for w in ws]
    for i, word in enumerate(speech.words):
        own = [p for p in speech.phones if p.word_index == i]
        assert own, word
        assert word.start == own[0].start and word.end == own[-1].end
        assert all(p.symbol != SILENCE for p in own)
    starts = [w.start for w in speech.words]
    assert starts == sorted(starts)


def test_voice_durations_sum_to_the_audio_length(tts):
    voice = tts.voice
    ids = voice.phoneme_ids(list(unicodedata.normalize("NFD", "ðɪs ɪz ɐ tˈɛst.")))
    out = voice.synthesize_ids(ids, seed=1)
    assert len(out.durations) == len(ids)
    assert int(out.durations.sum()) * HOP_LENGTH == len(out.audio)
    assert (out.durations >= 1).all()


# ------------------------------------------------------------------------------ determinism


def test_same_seed_same_audio_other_seed_other_audio(tts, speech):
    again = tts.synthesize(TEXT, seed=7)
    assert np.array_equal(again.audio, speech.audio)
    assert again.phones == speech.phones
    other = tts.synthesize(TEXT, seed=8)
    n = min(len(other.audio), len(speech.audio))
    assert not np.array_equal(other.audio[:n], speech.audio[:n])


def test_concurrent_calls_give_the_same_audio_as_sequential_ones(tts):
    from concurrent.futures import ThreadPoolExecutor

    texts = [("Pack my box with five dozen jugs.", 1), ("Sphinx of black quartz, judge my vow.", 2)]
    sequential = [tts.synthesize(t, seed=s).audio for t, s in texts]
    with ThreadPoolExecutor(2) as pool:
        parallel = list(pool.map(lambda ts: tts.synthesize(ts[0], seed=ts[1]).audio, texts))
    assert all(np.array_equal(a, b) for a, b in zip(sequential, parallel))


def test_speed_changes_duration(tts):
    slow = tts.synthesize("Slow and steady wins the race.", seed=0, speed=0.75)
    fast = tts.synthesize("Slow and steady wins the race.", seed=0, speed=1.5)
    assert slow.duration > 1.5 * fast.duration


# --------------------------------------------------------------- agreement with the aligner


def _matched_onsets(tts_speech, aligned):
    """Onset differences (TTS - aligner) of phones matched word by word (ARPAbet classes)."""
    def cls(symbol: str) -> str:
        arpa = ipa_to_arpabet(symbol)
        return arpa[0].rstrip("012") if arpa else symbol

    diffs, bilabial = [], []
    for w in range(len(tts_speech.words)):
        mine = [p for p in tts_speech.phones if p.word_index == w]
        theirs = [p for p in aligned.phones if p.word_index == w]
        matcher = difflib.SequenceMatcher(a=[cls(p.symbol) for p in mine], b=[cls(p.symbol) for p in theirs],
                                          autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                a, b = mine[block.a + k], theirs[block.b + k]
                diffs.append(a.start - b.start)
                if a.symbol in BILABIALS:
                    bilabial.append(a.start - b.start)
    return np.array(diffs), np.array(bilabial)


def test_tts_timings_agree_with_the_independent_aligner(tts):
    word_err, phone_err, bilabial_err = [], [], []
    for i, text in enumerate(CHECK_TEXTS):
        s = tts.synthesize(text, seed=i)
        a = align(s.audio, s.sample_rate, text)
        assert [w.text for w in a.words] == [w.text for w in s.words]
        word_err += [abs(x.start - y.start) for x, y in zip(s.words, a.words)]
        diffs, bil = _matched_onsets(s, a)
        phone_err += list(np.abs(diffs))
        bilabial_err += list(np.abs(bil))
    print(f"\nTTS vs aligner: median |word onset| {1000 * np.median(word_err):.1f} ms (n={len(word_err)}), "
          f"|phone onset| {1000 * np.median(phone_err):.1f} ms (n={len(phone_err)}), "
          f"|p b m onset| {1000 * np.median(bilabial_err):.1f} ms (n={len(bilabial_err)})")
    assert len(bilabial_err) >= 15
    assert np.median(word_err) <= 0.050
    assert np.median(bilabial_err) <= 0.040
    assert np.median(phone_err) <= 0.040


# ------------------------------------------------------------------------------ phonemizer


def test_clauses_keep_their_punctuation_and_words_map_through_merges():
    clauses = phonemize("Well, one of the best -- really? Yes!")
    assert [(c.words, c.punctuation) for c in clauses] == [
        (("Well",), ","), (("one", "of", "the", "best"), ","), (("really",), "?"), (("Yes",), "!")]
    merged = clauses[1]
    assert "ʌvðə" in merged.ipa  # espeak writes "of the" as one word
    labels = dict(zip(merged.ipa, merged.word_labels))
    assert labels["v"] == 1 and labels["ð"] == 2  # ...but "v" is still "of" and "ð" is "the"
    assert all(lab == -1 for ch, lab in zip(merged.ipa, merged.word_labels) if ch == " ")
    real = [lab for lab in merged.word_labels if lab >= 0]
    assert real == sorted(real) and set(real) == {0, 1, 2, 3}


def test_numbers_and_symbols_are_spoken_and_junk_is_dropped():
    assert clean_text("“Hi” 🍕 <b>there</b>\t  you* don’t") == "Hi there you don't"
    clauses = phonemize("It costs $5 🍕 (really).")
    ipa = " ".join(c.ipa for c in clauses)
    assert "fˈaɪv" in ipa and "dˈɑːlɚ" in ipa
    assert "pˈiːtsə" not in ipa  # the emoji is not read out
    assert [w for c in clauses for w in c.words] == ["It", "costs", "$5", "really"]


def test_label_words_handles_a_word_that_expands_to_several():
    labels = label_words("ɪt kˈɔsts fˈaɪv hˈʌndɹɪd dˈɑːlɚz", ["ɪt", "kˈɔsts", "fˈaɪv hˈʌndɹɪd dˈɑːlɚz"])
    text = "ɪt kˈɔsts fˈaɪv hˈʌndɹɪd dˈɑːlɚz"
    assert labels[text.index("f")] == 2 and labels[text.index("z", 10)] == 2 and labels[text.index("k")] == 1


def test_grouping_and_stress():
    spans = group_phones("dʒɔɪnɪŋ")
    assert [s.symbol for s in spans] == ["dʒ", "ɔɪ", "n", "ɪ", "ŋ"]
    assert [s.symbol for s in group_phones("wɜːld")] == ["w", "ɜː", "l", "d"]
    assert [s.symbol for s in group_phones(unicodedata.normalize("NFD", "bʌtn̩"))] == ["b", "ʌ", "t", "n̩"]
    # "həlˈoʊ": the mark before oʊ stresses the syllable "loʊ" (its onset l too), not "hə".
    assert syllable_stress(["h", "ə", "l", "oʊ"], [0, 0, 0, 1]) == [0, 0, 1, 1]


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("text, kwargs, field", [
    ("", {}, "script"),
    ("   \n\t ", {}, "script"),
    ("a " * 2501, {}, "script"),
    ("... -- !!! 🍕", {}, "script"),
    ("Hello there.", {"language": "klingon"}, "language"),
    ("Привет, как дела?", {}, "language"),  # en-us would spell the Cyrillic letters out one by one
    ("今日は写真から話しています。", {"language": "ja"}, "language"),  # espeak-ng has no kanji readings
    ("Hello there.", {"speed": 5.0}, "speed"),
    ("Hello there.", {"seed": -1}, "seed"),
])
def test_bad_input_raises_input_error(tts, text, kwargs, field):
    with pytest.raises(InputError) as err:
        tts.synthesize(text, **kwargs)
    assert err.value.field == field
    if kwargs.get("language") == "klingon":
        assert "en-us" in err.value.message and "supported" in err.value.message
    elif field == "language":
        assert "letter" in err.value.message, err.value.message  # what would go wrong, and what to set


def test_other_languages_and_long_scripts(tts):
    de = tts.synthesize("Guten Morgen, wie geht es dir?", seed=0, language="de")
    assert [w.text for w in de.words] == ["Guten", "Morgen", "wie", "geht", "es", "dir"]
    ru = tts.synthesize("Привет, как дела?", seed=0, language="ru")  # in its own language: spoken
    english = tts.synthesize("Hello, how are you?", seed=0)
    assert [w.text for w in ru.words] == ["Привет", "как", "дела"] and ru.duration < 2 * english.duration
    assert abs(de.phones[-1].end - de.duration) <= HOP_LENGTH / de.sample_rate
    # One run-on sentence far longer than a model chunk: split inside, timeline still exact.
    long_text = " ".join(["one more word"] * 60)
    s = tts.synthesize(long_text, seed=0)
    assert len(s.words) == 180 and abs(s.phones[-1].end - s.duration) <= HOP_LENGTH / s.sample_rate
    assert all(b.start >= a.start for a, b in zip(s.words, s.words[1:]))


# ------------------------------------------------------------------------------------ wav io


def test_wav_round_trip(tmp_path, speech):
    path = tmp_path / "speech.wav"
    write_wav(path, speech.audio, speech.sample_rate)
    audio, rate = read_wav(path)
    assert rate == speech.sample_rate and len(audio) == len(speech.audio)
    assert np.abs(audio - speech.audio).max() <= 0.5 / 32768 + 1e-7
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(InputError) as err:
        read_wav(tmp_path / "bad.wav")
    assert err.value.field == "audio"


def test_the_writing_system_says_which_languages_can_read_a_script():
    from services.tts.phonemize import check_readable, writing_system

    assert [writing_system(t) for t in ("Hello.", "Привет.", "你好。", "こんにちは、私は。", "안녕", "ＡＢＣ", "123")] == \
        ["LATIN", "CYRILLIC", "CJK", "KANA", "HANGUL", "LATIN", ""]
    for text, language in (("Hello.", "ru"), ("Привет.", "ru"), ("Привет.", "uk"), ("你好。", "cmn"),
                           ("こんにちは。", "ja"), ("안녕하세요", "ko"), ("Bonjour, Привет.", "fr")):
        check_readable(text, language)  # (Latin letters: any language reads them; a Cyrillic word among French)
    for text, language, hint in (("Привет, мир.", "en-us", "ru, uk"), ("你好。", "ja", "cmn"),
                                 ("こんにちは。", "en-us", "Japanese kana"), ("漢字とかな。", "ja", "kana only")):
        with pytest.raises(InputError) as err:
            check_readable(text, language)
        assert err.value.field == "language" and hint in err.value.message, err.value.message
