"""Forced aligner: real pocketsphinx on real recordings (LibriVox) and on the real TTS voice."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import resample_poly

from services.common.domain.errors import InputError
from services.tts import TextToSpeech, read_wav
from services.tts.align import align
from services.tts.phones import PHONES, SILENCE, is_vowel

DATA = Path(__file__).parent / "data" / "librivox"
UTTERANCES = ("sense_and_sensibility_01_austen_64kb-0880", "sense_and_sensibility_01_austen_64kb-0930")


def _load(name: str):
    audio, rate = read_wav(DATA / f"{name}.wav")
    text = (DATA / f"{name}.txt").read_text().strip()
    ref = [(p["t"], p["b"]) for w in json.loads((DATA / f"{name}.phone.json").read_text())["w"] for p in w["w"]]
    return audio, rate, text, ref


@pytest.mark.parametrize("name", UTTERANCES)
@pytest.mark.parametrize("rate", [16000, 44100])
def test_phone_onsets_match_the_reference_alignment(name, rate):
    audio, native, text, ref = _load(name)
    if rate != native:
        audio = resample_poly(audio, rate // 100, native // 100).astype(np.float32)
    speech = align(audio, rate, text)
    assert [w.text for w in speech.words] == text.split()
    mine = [p for p in speech.phones if p.symbol != SILENCE]
    theirs = [(n, b) for n, b in ref if n != "SIL"]
    assert len(mine) == len(theirs)
    errors = np.abs([p.start - b for p, (_, b) in zip(mine, theirs)])
    print(f"\n{name[-4:]} @ {rate} Hz: median phone-onset error {1000 * np.median(errors):.1f} ms, "
          f"max {1000 * errors.max():.0f} ms over {len(errors)} phones")
    assert np.median(errors) <= 0.020


def test_timeline_inventory_and_stress():
    audio, rate, text, _ = _load(UTTERANCES[1])
    speech = align(audio, rate, text)
    phones = speech.phones
    assert phones[0].start == 0.0 and phones[0].symbol == SILENCE
    assert phones[-1].end == pytest.approx(len(audio) / rate, abs=1e-9)
    for prev, cur in zip(phones, phones[1:]):
        assert cur.start == pytest.approx(prev.end, abs=1e-9) and cur.end > cur.start
    assert {p.symbol for p in phones} <= PHONES
    # "he might even have been made amiable himself": stressed and unstressed vowels, from espeak
    vowels = [p for p in phones if is_vowel(p.symbol)]
    assert {p.stress for p in vowels} >= {0, 1}
    amiable = [p for p in phones if p.word_index == speech.words.index(next(w for w in speech.words
                                                                            if w.text == "amiable"))]
    stressed = [p.symbol for p in amiable if p.stress == 1 and is_vowel(p.symbol)]
    assert stressed == ["eɪ"]  # AY-mee-uh-bul: the first syllable carries the stress
    assert all(p.word_index == -1 for p in phones if p.symbol == SILENCE)


@pytest.fixture(scope="module")
def tts() -> TextToSpeech:
    return TextToSpeech()


def test_out_of_vocabulary_words_and_numbers(tts):
    text = "Zorblax counted 42 glimmerfish near Qwertyville."
    s = tts.synthesize(text, seed=0)
    a = align(s.audio, s.sample_rate, text)
    assert [w.text for w in a.words] == ["Zorblax", "counted", "42", "glimmerfish", "near", "Qwertyville"]
    forty_two = a.words[2]
    assert forty_two.end - forty_two.start > 0.3  # "forty two" is two spoken words long
    assert {p.symbol for p in a.phones} <= PHONES
    for ws, wa in zip(s.words, a.words):  # the OOV pronunciations land where the voice said them
        assert abs(ws.start - wa.start) < 0.08, (ws, wa)


def test_a_recording_of_another_script_is_rejected():
    audio, rate, _, _ = _load(UTTERANCES[0])
    _, _, other_text, _ = _load(UTTERANCES[1])
    with pytest.raises(InputError) as err:
        align(audio, rate, other_text)
    assert err.value.field == "audio"


@pytest.mark.parametrize("audio, rate, text, field", [
    (np.zeros(3 * 16000, np.float32), 16000, "he was not an ill disposed young man", "audio"),
    (np.zeros(100, np.float32), 16000, "hello", "audio"),
    (np.full(16000, np.nan, np.float32), 16000, "hello", "audio"),
    (np.zeros(16000, np.float32), 16000, "  ... ", "script"),
])
def test_unusable_input(audio, rate, text, field):
    with pytest.raises(InputError) as err:
        align(audio, rate, text)
    assert err.value.field == field


def test_aligner_model_runs_in_triton(triton_server_factory):
    """The `aligner` model served by a real Triton gives the in-process alignment; a recording that
    does not match its script is an InputError on the audio; the driving path goes through it."""
    from services.common.infra.inference import InProcessClient, TritonClient
    from services.tts.align_model import align_with
    from services.tts.recording import driving_speech, prepare_recording

    root = Path(__file__).resolve().parents[1]
    server = triton_server_factory(root / "model_repository",
                                   models=["speaker_encoder", "voice_converter", "tts_kokoro", "aligner",
                                           "timbre_matcher"])
    triton = TritonClient(server.grpc_url)
    audio, rate, text, _ = _load(UTTERANCES[1])
    remote = align_with(triton, audio, rate, text)
    local = align_with(InProcessClient(), audio, rate, text)
    assert remote.phones == local.phones and remote.words == local.words
    assert [w.text for w in remote.words] == text.split() and len(remote.phones) > 20
    with pytest.raises(InputError) as info:
        align_with(triton, audio, rate, "Four score and seven years ago our fathers brought forth a new nation")
    assert info.value.field == "audio"
    driven = driving_speech(prepare_recording((audio, rate)), text, client=triton)
    assert [w.text for w in driven.words] == text.split()


def test_alignment_score_tells_clear_speech_from_the_wrong_words():
    from services.tts.align import alignment_score, min_score

    audio, rate, text, _ = _load(UTTERANCES[0])
    right = alignment_score(audio, rate, text)
    wrong = alignment_score(audio, rate, "Four score and seven years ago our fathers brought forth")
    assert right > min_score() > wrong, (right, wrong)
