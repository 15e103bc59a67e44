"""Voice cloning from a sample: build a SpeakerProfile once, then speak any script in that voice.

build_profile: the sample is prepared like any recording (checks, trim, loudness), analysed with
WORLD (Harvest F0) and compared with the TTS voice's own statistics (from a fixed calibration
text, computed once per cloner). That gives the F0 mapping, the vocal-tract warp and the envelope
correction. Then a small search picks the correction strength whose converted calibration speech
the speaker encoder finds most similar to the sample (the objective the benchmark measures).

clone: TTS speech -> the voice_converter model. Timing is untouched, so the phone timeline stays
exact for the lips.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import replace
from math import gcd

import numpy as np

from services.common.errors import InputError
from services.common.inference import InferenceClient
from services.common.speech import Speech
from services.tts.cloning import encoder, world
from services.tts.cloning.converter import convert_with
from services.tts.cloning.profile import SpeakerProfile
from services.tts.recording import VOICE_SAMPLE, prepare_recording

CALIBRATION_TEXT = (
    "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. "
    "It is easy to tell the depth of a well. These days a chicken leg is a rare dish. "
    "Rice is often served in round bowls. The juice of lemons makes fine punch.")
ANALYSIS_MAX_RATE = 22050  # the TTS voice has nothing above 11 kHz to convert
MIN_VOICED_S = 1.5


def _strengths() -> tuple[float, ...]:
    """Envelope-correction strengths tried when building a profile (LIKENESS_CLONE_STRENGTHS)."""
    raw = os.environ.get("LIKENESS_CLONE_STRENGTHS", "0.5,1.0,1.5")
    return tuple(float(s) for s in raw.split(",") if s.strip())


class VoiceCloner:
    def __init__(self, tts, client: InferenceClient) -> None:
        self.tts = tts  # a services.tts.TextToSpeech
        self.client = client
        self._calibration: tuple[Speech, world.Analysis, world.VoiceStats] | None = None
        self._lock = threading.Lock()

    def _calibrate(self) -> tuple[Speech, world.Analysis, world.VoiceStats]:
        with self._lock:
            if self._calibration is None:
                speech = self.tts.synthesize(CALIBRATION_TEXT, seed=0)
                analysis = world.analyse(speech.audio, speech.sample_rate)
                self._calibration = (speech, analysis, world.voice_stats(analysis))
            return self._calibration

    def build_profile(self, sample: bytes | tuple[np.ndarray, int], *, field: str = VOICE_SAMPLE) -> SpeakerProfile:
        """A voice sample (encoded bytes or (samples, rate); 3-60 s of speech, any text) -> profile.
        Raises InputError(field, ...) for unusable samples."""
        sha = hashlib.sha256(sample if isinstance(sample, bytes) else
                             np.ascontiguousarray(sample[0], np.float32).tobytes()).hexdigest()
        prepared = prepare_recording(sample, field=field, kind=VOICE_SAMPLE)
        audio, rate = _at_most(prepared.samples, prepared.sample_rate, ANALYSIS_MAX_RATE)
        try:
            target = world.voice_stats(world.analyse(audio, rate, accurate_f0=True))
        except ValueError:
            target = None
        if target is None or target.voiced_seconds < MIN_VOICED_S:
            raise InputError(field, f"has too little voiced speech to learn a voice from (need "
                                    f"{MIN_VOICED_S:g} s of voiced speech)")
        calibration, cal_analysis, source = self._calibrate()
        warp = world.fit_warp(source, target)
        base = world.Conversion(logf0_source=(source.logf0_mean, source.logf0_std),
                                logf0_target=(target.logf0_mean, target.logf0_std), warp=warp,
                                correction=world.envelope_correction(source, target, warp))
        sample_embedding = encoder.embed(self.client, prepared.samples, prepared.sample_rate)
        best, best_similarity = base, -1.0
        for strength in _strengths():  # keep what the speaker encoder says sounds most like the sample
            candidate = replace(base, correction_strength=strength)
            converted = world.convert(calibration.audio, calibration.sample_rate, candidate, cal_analysis)
            similarity = encoder.cosine(encoder.embed(self.client, converted, calibration.sample_rate),
                                        sample_embedding)
            if similarity > best_similarity:
                best, best_similarity = candidate, similarity
        warnings = list(prepared.warnings)
        if prepared.duration < 5:
            warnings.append(f"the voice sample has only {prepared.duration:.1f} s of speech; 10-30 s "
                            "clones the voice better")
        return SpeakerProfile(conversion=best, embedding=sample_embedding, voiced_seconds=target.voiced_seconds,
                              sample_sha256=sha, calibration_similarity=best_similarity, warnings=warnings)

    def clone(self, speech: Speech, profile: SpeakerProfile) -> Speech:
        """The same words, timing and timeline, in the profile's voice."""
        audio = convert_with(self.client, speech.audio, speech.sample_rate, profile.conversion)
        return Speech(audio=audio, sample_rate=speech.sample_rate, phones=list(speech.phones),
                      words=list(speech.words), text=speech.text)


def _at_most(audio: np.ndarray, rate: int, max_rate: int) -> tuple[np.ndarray, int]:
    if rate <= max_rate:
        return audio, rate
    from scipy.signal import resample_poly

    g = gcd(int(rate), max_rate)
    return resample_poly(audio, max_rate // g, int(rate) // g).astype(np.float32), max_rate
