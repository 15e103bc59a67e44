"""Built-in voices: who speaks a script when no voice is cloned.

Two neural voices ship in packages: Piper's en_US joe (male) and Kokoro-82M, whose shipped styles
are Japanese voices (four female, one male) speaking English through espeak-ng phonemes:

  joe            Piper en_US-joe-medium (CC0), male; the default and the fastest.
  kokoro-female  Kokoro-82M (Apache-2.0) with the shipped jf_gongitsune style: the one female style
                 pocketsphinx understands in English.
  kokoro-male    Kokoro-82M with the shipped jm_kumo style.

Their intelligibility, pitch, speed and timeline accuracy (benchmarks/voices.py):
docs/notes/tts.md#built-in-voices. Both Kokoro voices have a Japanese accent. A cloned voice
(services.tts.cloning) replaces the built-in one.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from services.common.domain.errors import InputError
from services.tts.phonemize import DEFAULT_LANGUAGE

if TYPE_CHECKING:
    from services.common.infra.inference import InferenceClient
    from services.common.domain.speech import Speech


@dataclass(frozen=True)
class Voice:
    name: str
    gender: str  # "male" / "female"
    engine: str  # "piper" / "kokoro"
    description: str


VOICES: dict[str, Voice] = {v.name: v for v in (
    Voice("joe", "male", "piper", "Piper en_US joe (CC0), the fastest"),
    Voice("kokoro-female", "female", "kokoro", "Kokoro-82M, style jf_gongitsune (Japanese accent)"),
    Voice("kokoro-male", "male", "kokoro", "Kokoro-82M, style jm_kumo (Japanese accent)"),
)}
DEFAULT_VOICE = "joe"
KOKORO_STYLES = {"kokoro-female": "jf_gongitsune", "kokoro-male": "jm_kumo"}


def check_voice(name: str, field: str = "voice") -> str:
    """The catalogue name for `name` ("" = the default), or an InputError listing the voices."""
    key = (name or "").strip().lower() or DEFAULT_VOICE
    if key not in VOICES:
        raise InputError(field, f"unknown voice {name!r}; built-in voices: {', '.join(VOICES)}")
    return key


def kokoro_style_pack(name: str) -> np.ndarray:
    """[510, 256] style pack of a Kokoro voice (row k: inputs of k tokens)."""
    from services.tts.kokoro import shipped_styles  # (the gateway imports this module for the catalogue alone)

    return shipped_styles()[KOKORO_STYLES[name]]


class VoiceBank:
    """Speaks a script in a built-in voice: the Piper engine it is given, Kokoro loaded on first use."""

    def __init__(self, tts, client: InferenceClient | None = None) -> None:
        self.tts = tts  # a services.tts.TextToSpeech (Piper)
        self.client = client or getattr(getattr(tts, "voice", None), "client", None)
        self._kokoro = None
        self._lock = threading.Lock()

    def kokoro(self):
        with self._lock:
            if self._kokoro is None:
                # (the engines load when a Kokoro voice first speaks: the gateway imports this module for the catalogue)
                from services.tts.kokoro_speech import KokoroSpeech
                from services.tts.tensor_model import ModelKokoro

                self._kokoro = KokoroSpeech(ModelKokoro(self.client))
            return self._kokoro

    def speak(self, text: str, voice: str = DEFAULT_VOICE, *, seed: int = 0, speed: float = 1.0,
              language: str = DEFAULT_LANGUAGE) -> Speech:
        name = check_voice(voice)
        if VOICES[name].engine == "piper":
            return self.tts.synthesize(text, seed=seed, speed=speed, language=language)
        return self.kokoro().synthesize(text, kokoro_style_pack(name), speed=speed, language=language)
