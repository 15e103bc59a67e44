"""Built-in voices (services/tts/voices.py): each speaks the script intelligibly with an exact
timeline, the female one in a female pitch range; unknown names and clashes with a cloned voice are
clear errors (the TTS service, the embedded pipeline's request, the CLI)."""
from __future__ import annotations

import numpy as np
import pytest

from services.common.domain.errors import InputError
from services.common.infra.inference import InProcessClient
from services.tts import TextToSpeech
from services.tts.tensor_model import ModelVoice
from services.tts.voices import DEFAULT_VOICE, VOICES, VoiceBank, check_voice
from tests.test_pipeline import PHOTOS, run_cli

SENTENCES = "The boy was there when the sun rose. Help the woman get back to her feet."


@pytest.fixture(scope="module")
def bank() -> VoiceBank:
    client = InProcessClient()
    return VoiceBank(TextToSpeech(voice=ModelVoice(client)), client)


def _median_f0(audio: np.ndarray, rate: int) -> float:
    import pyworld

    x = audio.astype(np.float64)
    f0, _ = pyworld.harvest(x, rate, f0_floor=60, f0_ceil=500)
    return float(np.median(f0[f0 > 0]))


def _heard(audio: np.ndarray, rate: int) -> list[str]:
    import pocketsphinx
    from scipy.signal import resample_poly

    decoder = pocketsphinx.Decoder(loglevel="FATAL")
    pcm = resample_poly(audio, 16000, rate)
    decoder.start_utt()
    decoder.process_raw((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    return decoder.hyp().hypstr.lower().split() if decoder.hyp() else []


@pytest.mark.parametrize("name", list(VOICES))
def test_each_voice_speaks_the_words_with_a_timeline(bank, name):
    speech = bank.speak(SENTENCES, name)
    words = [w.text.lower() for w in speech.words]
    assert words == [w.strip(".").lower() for w in SENTENCES.split()]
    spoken = [p for p in speech.phones if p.symbol != "sil"]
    assert 0 < spoken[0].start < 0.5 and abs(speech.phones[-1].end - speech.duration) < 0.3
    heard = _heard(speech.audio, speech.sample_rate)
    assert len(set(heard) & set(words)) >= 0.6 * len(set(words)), heard  # pocketsphinx understands it
    # the timeline is where the words are heard: word onsets against the forced aligner's
    from services.tts.align import align

    heard_at = [w.start for w in align(speech.audio, speech.sample_rate, SENTENCES).words]
    assert len(heard_at) == len(speech.words)
    assert np.median(np.abs(np.array([w.start for w in speech.words]) - heard_at)) < 0.04
    f0 = _median_f0(speech.audio, speech.sample_rate)
    if VOICES[name].gender == "female":
        assert f0 > 180, f0
    else:
        assert f0 < 150, f0


def test_voice_names_and_clashes_are_clear_errors(bank):
    assert check_voice("") == DEFAULT_VOICE and check_voice("Kokoro-Female") == "kokoro-female"
    with pytest.raises(InputError, match="built-in voices: joe, kokoro-female, kokoro-male") as info:
        check_voice("alice")
    assert info.value.field == "voice"
    from services.pipeline import VideoRequest

    with pytest.raises(InputError, match="brings its own voice"):
        VideoRequest(photo=b"x", script="Hi.", voice="kokoro-male", voice_sample=b"sample").validate()
    from likeness_client.proto.likeness.v1 import tts_pb2
    from services.tts.server import TtsServicer

    servicer = TtsServicer(bank.tts)
    request = tts_pb2.SynthesizeRequest(text="Hi.", voice="kokoro-male")
    request.voice_reference.profile_data = b"{}"
    with pytest.raises(InputError) as clash:
        servicer.Synthesize(request, None)
    assert clash.value.field == "voice"
    with pytest.raises(InputError, match="unknown voice"):
        servicer.Synthesize(tts_pb2.SynthesizeRequest(text="Hi.", voice="nope"), None)
    spoken = servicer.Synthesize(tts_pb2.SynthesizeRequest(text="Hi there.", voice="kokoro-female"), None)
    assert spoken.audio.format.sample_rate == 24000 and [w.text for w in spoken.timeline.words] == ["Hi", "there"]


def test_cli_lists_voices_and_speaks_in_one(tmp_path):
    listed = run_cli("voices")
    assert listed.returncode == 0 and all(name in listed.stdout for name in VOICES), listed.stdout
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hello.",
                   "--out", str(tmp_path / "x.mp4"), "--voice-name", "alice")
    assert proc.returncode == 2 and proc.stderr.startswith("error: voice:"), proc.stderr
    out = tmp_path / "female.mp4"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hello, I am a built-in voice.",
                   "--out", str(out), "--size", "128", "--voice-name", "kokoro-female")
    assert proc.returncode == 0, proc.stderr
    import av

    with av.open(str(out)) as container:
        assert container.streams.audio and float(container.duration) / av.time_base > 1.0


def test_speaking_rate_reaches_every_voice_and_is_checked(bank):
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline(bank.client)
    for name in VOICES:
        normal, _ = pipeline.speech(VideoRequest(photo=b"x", script=SENTENCES, voice=name))
        fast, _ = pipeline.speech(VideoRequest(photo=b"x", script=SENTENCES, voice=name, speed=1.5))
        assert fast.duration < 0.8 * normal.duration, (name, fast.duration, normal.duration)
        assert [w.text for w in fast.words] == [w.text for w in normal.words]
    for bad in (dict(speed=3.0), dict(speed=0.1), dict(speed=1.2, driving_audio=b"rec", script="")):
        with pytest.raises(InputError) as info:
            VideoRequest(photo=b"x", **{"script": "Hi.", **bad}).validate()
        assert info.value.field == "speed"
    proc = run_cli("generate", "--photo", str(PHOTOS / "astronaut.png"), "--script", "Hello.",
                   "--out", "/tmp/never.mp4", "--speed", "5")
    assert proc.returncode == 2 and proc.stderr.startswith("error: speed: must be from 0.5 to 2"), proc.stderr
