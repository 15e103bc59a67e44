"""Driving a video by the user's own recording: every accepted format, trimming, loudness, alignment,
and every bad-input case -> a clear InputError (CLI: exit 2, gRPC: INVALID_ARGUMENT)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from services.common.domain.errors import InputError
from services.tts.recording import (DRIVING, VOICE_SAMPLE, clipped_fraction, driving_speech,
                                    integrated_loudness, prepare_recording)
from services.tts.wavio import read_wav

DATA = Path(__file__).parent / "data" / "librivox"
UTTERANCES = ("sense_and_sensibility_01_austen_64kb-0930", "sense_and_sensibility_01_austen_64kb-0880")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def librivox() -> tuple[np.ndarray, int, str, list[dict]]:
    """Two real utterances of one reader joined (6.3 s, 16 kHz), their transcript and the reference
    phone alignment (pocketsphinx's, times shifted for the second utterance)."""
    parts, texts, phones, offset = [], [], [], 0.0
    for name in UTTERANCES:
        audio, rate = read_wav(DATA / f"{name}.wav")
        parts.append(audio)
        texts.append((DATA / f"{name}.txt").read_text().strip())
        for word in json.loads((DATA / f"{name}.phone.json").read_text())["w"]:
            phones += [{"t": p["t"], "b": p["b"] + offset} for p in word["w"]]
        offset += len(audio) / rate
    return np.concatenate(parts), rate, " ".join(texts), phones


def encode(samples: np.ndarray, rate: int, container: str, codec: str, *, channels: int = 1,
           out_rate: int | None = None) -> bytes:
    """Encode with PyAV (FFmpeg) the way a phone or browser would hand us a file."""
    import av

    out_rate = out_rate or rate
    if out_rate != rate:
        from scipy.signal import resample_poly

        samples = resample_poly(samples, out_rate, rate).astype(np.float32)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=out_rate)
        stream.layout = "stereo" if channels == 2 else "mono"
        fmt = stream.codec_context.codec.audio_formats[0].name
        data = np.tile(samples[None, :], (channels, 1)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(
            data if fmt.endswith("p") else data.T.reshape(1, -1), format="fltp" if fmt.endswith("p") else "flt",
            layout=stream.layout.name)
        frame.sample_rate = out_rate
        frame.time_base = Fraction(1, out_rate)
        frame.pts = 0
        resampler = av.AudioResampler(format=fmt, layout=stream.layout.name, rate=out_rate,
                                      frame_size=stream.codec_context.frame_size or None)
        for chunk in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(chunk):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


FORMATS = [  # container, codec, channels, rate
    ("wav", "pcm_s16le", 2, 44100),
    ("mp3", "libmp3lame", 1, 22050),
    ("mp4", "aac", 2, 48000),  # .m4a
    ("ogg", "libopus", 1, 48000),
    ("webm", "libopus", 2, 48000),
    ("flac", "flac", 1, 16000),
]


@pytest.mark.parametrize("container,codec,channels,rate", FORMATS, ids=[f[0] for f in FORMATS])
def test_every_format_decodes_trims_and_normalises(librivox, container, codec, channels, rate) -> None:
    audio, source_rate, _, _ = librivox
    padded = np.concatenate([np.zeros(source_rate), audio, np.zeros(source_rate // 2)])  # 1 s + 0.5 s silence
    data = encode(padded, source_rate, container, codec, channels=channels, out_rate=rate)
    prepared = prepare_recording(data, field=DRIVING)
    assert prepared.sample_rate == rate
    # leading/trailing silence removed, speech kept (0.1 s pad each side; codecs add a little delay)
    speech_s = len(audio) / source_rate
    assert speech_s - 0.05 <= prepared.duration <= speech_s + 0.35, prepared.duration
    assert 0.75 <= prepared.trimmed_start_s <= 1.0
    # normalised to the target loudness (-18 LUFS) unless the -1 dBFS peak ceiling stopped it lower
    after = integrated_loudness(prepared.samples, rate)
    peak_db = 20 * np.log10(np.max(np.abs(prepared.samples)))
    assert abs(after - (-18.0)) < 0.5 or (after < -18 and peak_db > -1.2), (after, peak_db)


def test_aligned_recording_has_accurate_phone_onsets(librivox) -> None:
    """An mp3 recording + its script -> phones within tens of ms of the reference alignment."""
    audio, rate, text, reference = librivox
    prepared = prepare_recording(encode(audio, rate, "mp3", "libmp3lame"), field=DRIVING)
    speech = driving_speech(prepared, text)
    assert [w.text.lower() for w in speech.words] == text.lower().split()
    ours = [p.start for p in speech.phones if p.symbol != "sil"]
    ref = [p["b"] for p in reference if p["t"] not in ("SIL", "sil", "+SPN+", "+NSN+")]
    shift = prepared.trimmed_start_s  # our timeline starts where the trimmed recording starts
    errors = [min(abs(r - shift - o) for o in ours) for r in ref]
    assert np.median(errors) <= 0.02, np.median(errors)
    assert speech.phones[-1].end == pytest.approx(prepared.duration, abs=1e-6)


def test_recording_without_script_has_no_timeline(librivox) -> None:
    audio, rate, _, _ = librivox
    speech = driving_speech(prepare_recording((audio, rate)), "")
    assert speech.phones == [] and speech.words == [] and speech.duration > 6


# -- bad input ---------------------------------------------------------------------------------

def _bad(data, match: str, **kwargs) -> InputError:
    with pytest.raises(InputError, match=match) as info:
        prepare_recording(data, **kwargs)
    assert info.value.field == kwargs.get("field", DRIVING)
    return info.value


def test_silent_recording_is_rejected() -> None:
    _bad(encode(np.zeros(16000 * 5, np.float32), 16000, "wav", "pcm_s16le"), "is silent")
    rng = np.random.default_rng(0)
    _bad((rng.normal(0, 10 ** (-75 / 20), 16000 * 5).astype(np.float32), 16000), "is silent")


def test_clipped_recording_is_rejected(librivox) -> None:
    audio, rate, _, _ = librivox
    assert clipped_fraction(audio) == 0.0  # the real recording is clean
    _bad((np.clip(audio * 8, -1, 1), rate), "is clipped")


def test_too_short_and_too_long_recordings_are_rejected(librivox, monkeypatch) -> None:
    audio, rate, _, _ = librivox
    error = _bad((audio[:int(0.5 * rate)], rate), "too short")
    assert "at least 1 s" in error.message, error.message
    monkeypatch.setenv("LIKENESS_RECORDING_MAX_S", "5")
    _bad((audio, rate), "too long")


# -- short and hot recordings: used with a warning, down to 1 s of speech and up to 2% clipped -----------

@pytest.fixture(scope="module")
def tts():
    from services.tts import TextToSpeech

    return TextToSpeech()


def spoken(tts, text: str, speed: float = 1.0) -> tuple[np.ndarray, int]:
    speech = tts.synthesize(text, seed=1, speed=speed)
    return speech.audio, speech.sample_rate


def clipped(audio: np.ndarray, share: float) -> np.ndarray:
    """`audio` turned up until `share` of its samples pass full scale, and clipped there (a hot input)."""
    gain = 1.0 / np.quantile(np.abs(audio), 1.0 - share)
    return np.clip(audio * gain, -1.0, 1.0).astype(np.float32)


SHORT = [("Thank you, Mary.", 1.15), ("Maybe Bob will pay me back soon.", 1.0),
         ("Please bring the big map, and open it wide for me.", 0.9)]


@pytest.mark.parametrize("text,speed", SHORT, ids=["1.0s", "1.9s", "2.7s"])
def test_short_recording_is_used_with_a_warning(tts, text, speed) -> None:
    prepared = prepare_recording(spoken(tts, text, speed), field=DRIVING)
    assert 1.0 <= prepared.duration < 3.0, prepared.duration
    assert prepared.warnings == [f"driving_audio is short: {prepared.duration:.1f} s of speech; "
                                 "3 s or more is better"]
    speech = driving_speech(prepared, text)  # and it aligns to its transcript
    assert [w.text for w in speech.words] == text.replace(",", "").replace(".", "").split()


def test_short_voice_sample_warning_says_what_clones_better(tts) -> None:
    prepared = prepare_recording(spoken(tts, "Thank you, Mary.", 1.15), field=VOICE_SAMPLE)
    assert len(prepared.warnings) == 1 and prepared.warnings[0].startswith("voice_sample is short: 1.0 s"), \
        prepared.warnings
    assert "10-30 s clones the voice better" in prepared.warnings[0]


def test_recording_of_three_seconds_or_more_has_no_warning(tts) -> None:
    prepared = prepare_recording(spoken(tts, "Maybe Bob will pay me back soon. Please bring the big map."))
    assert prepared.duration >= 3.0 and prepared.warnings == [], (prepared.duration, prepared.warnings)


def test_half_second_recording_is_refused(tts) -> None:
    error = _bad(spoken(tts, "Hello."), "is too short")
    assert "at least 1 s is needed" in error.message, error.message


@pytest.mark.parametrize("share", [0.001, 0.007, 0.01, 0.05])
def test_clipping_below_two_percent_warns_and_above_is_refused(tts, share) -> None:
    audio, rate = spoken(tts, "Maybe Bob will pay me back soon. Please bring the big map.")
    hot = clipped(audio, share)
    measured = clipped_fraction(hot)
    assert share * 0.7 <= measured <= share, measured  # (lone samples at full scale are not counted)
    if share >= 0.02:
        error = _bad((hot, rate), "is clipped")
        assert f"{measured:.1%} of samples" in error.message and "limit 2.0%" in error.message, error.message
        return
    prepared = prepare_recording((hot, rate), field=DRIVING)
    warned = [w for w in prepared.warnings if "clipped" in w]
    if share < 0.002:  # a few flat peaks: nothing to say
        assert warned == [], prepared.warnings
    else:
        assert warned == [f"driving_audio is clipped in places ({measured:.1%} of samples flat at full scale); "
                          "it was used, but a lower input level records cleaner speech"], prepared.warnings


@pytest.mark.parametrize("data,match", [
    (b"\x00\x01garbage" * 100, "cannot decode"),
    (b"", "is empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "cannot decode|no samples"),  # truncated header
], ids=["garbage", "empty", "truncated-wav"])
def test_corrupt_audio_is_rejected(data, match) -> None:
    _bad(data, match)


def test_unsupported_file_is_rejected() -> None:
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(png, format="PNG")
    _bad(png.getvalue(), "no audio stream|cannot decode")


def test_recording_that_does_not_match_its_script(librivox) -> None:
    audio, rate, _, _ = librivox
    prepared = prepare_recording((audio, rate))
    with pytest.raises(InputError, match="does not match|could not be aligned|aligned") as info:
        driving_speech(prepared, "Four score and seven years ago our fathers brought forth on this continent "
                                 "a new nation, conceived in liberty, and dedicated to the proposition.")
    assert info.value.field == DRIVING


# -- the tts service (servicer called directly) and the CLI ------------------------------------------

def test_tts_align_without_transcript_returns_prepared_audio(librivox) -> None:
    from services.common.infra import wire
    from likeness_client.proto.likeness.v1 import common_pb2, tts_pb2
    from services.tts.server import TtsServicer

    audio, rate, text, _ = librivox
    servicer = TtsServicer(tts=None)  # Align needs no voice
    padded = np.concatenate([np.zeros(rate), audio])
    request = tts_pb2.AlignRequest(audio=common_pb2.AudioSource(audio=wire.audio_to_pb(padded, rate)))
    response = servicer.Align(request, None)
    assert len(response.timeline.phones) == 0
    samples, out_rate = wire.audio_from_pb(response.audio)
    assert out_rate == rate and abs(len(samples) / rate - (len(audio) / rate + 0.1)) < 0.1
    request.transcript = text
    aligned = servicer.Align(request, None)
    assert [w.text for w in aligned.timeline.words] == text.split()
    silent = tts_pb2.AlignRequest(audio=common_pb2.AudioSource(audio=wire.audio_to_pb(np.zeros(5 * rate), rate)))
    with pytest.raises(InputError, match="silent"):
        servicer.Align(silent, None)


def test_tts_align_passes_on_the_warnings_that_reach_a_job(tts) -> None:
    """The platform's path: the runner adds AlignResponse.warnings to the job's warnings."""
    from services.common.infra import wire
    from likeness_client.proto.likeness.v1 import common_pb2, tts_pb2
    from services.tts.server import TtsServicer

    audio, rate = spoken(tts, "Thank you, Mary.", 1.15)
    request = tts_pb2.AlignRequest(audio=common_pb2.AudioSource(audio=wire.audio_to_pb(clipped(audio, 0.01), rate)),
                                   transcript="Thank you, Mary.")
    response = TtsServicer(tts=None).Align(request, None)
    assert [w.text for w in response.timeline.words] == ["Thank", "you", "Mary"]
    assert [w.split(" (")[0].split(":")[0] for w in response.warnings] == ["audio is clipped in places",
                                                                          "audio is short"], response.warnings


def test_cli_bad_recording_is_one_line_error_exit_2(tmp_path: Path, tts) -> None:
    from skimage import data as skdata
    from PIL import Image

    photo = tmp_path / "face.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    silent = tmp_path / "silent.wav"
    silent.write_bytes(encode(np.zeros(16000 * 4, np.float32), 16000, "wav", "pcm_s16le"))
    half_second, hard_clipped = tmp_path / "half_second.wav", tmp_path / "hard_clipped.wav"
    half_second.write_bytes(encode(*spoken(tts, "Hello."), "wav", "pcm_s16le"))
    audio, rate = spoken(tts, "Maybe Bob will pay me back soon. Please bring the big map.")
    hard_clipped.write_bytes(encode(clipped(audio, 0.05), rate, "wav", "pcm_s16le"))
    for recording, extra, expected in ((silent, [], "error: driving_audio: is silent"),
                                       (silent, ["--voice", str(silent)], "error: voice:"),
                                       (half_second, [], "error: driving_audio: is too short: 0.5"),
                                       (hard_clipped, [], "error: driving_audio: is clipped (4.")):
        result = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(photo),
                                 "--audio", str(recording), "--out", str(tmp_path / "o.mp4"), *extra],
                                capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert result.returncode == 2, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.startswith("error")]
        assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
        assert not (tmp_path / "o.mp4").exists()


def test_cli_renders_a_short_hot_recording_with_its_warnings(tmp_path: Path, tts) -> None:
    """1 s of speech, 1% of it clipped: rendered, and both warnings on stderr (no transcript: the
    audio-only expression model drives the face)."""
    from tests.video_instrument import decode, measure_faces

    audio, rate = spoken(tts, "Thank you, Mary.", 1.15)
    recording, out = tmp_path / "short_hot.wav", tmp_path / "x.mp4"
    recording.write_bytes(encode(clipped(audio, 0.01), rate, "wav", "pcm_s16le"))
    result = subprocess.run([sys.executable, "-m", "services.cli", "generate",
                             "--photo", str(ROOT / "assets" / "photos" / "grace_hopper.jpg"),
                             "--audio", str(recording), "--out", str(out), "--size", "256"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert any(w.startswith("warning: driving_audio is short: 1.0 s of speech; 3 s or more is better")
               for w in warnings), result.stderr
    assert any(w.startswith("warning: driving_audio is clipped in places (0.") for w in warnings), result.stderr
    video = decode(out)
    assert video.frames.shape[1:] == (256, 256, 3)
    assert 1.0 <= video.video_duration <= 1.3 and abs(video.video_duration - video.audio_duration) <= 1 / 25 + 0.03
    faces = measure_faces(video.frames)
    assert faces.found.all()
    mouth = faces.mouth_aperture
    assert np.nanmax(mouth) - np.nanmin(mouth) > 0.03, mouth  # it speaks
