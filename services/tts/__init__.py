"""TTS stage: script -> Speech (neural audio + exact phone/word timings), and forced alignment.

`from services.tts import TextToSpeech` (imported lazily, so importing the package stays cheap);
the aligner is `services.tts.align.align(audio, sample_rate, script)`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from services.tts.engine import TextToSpeech
    from services.tts.wavio import read_wav, write_wav

__all__ = ["TextToSpeech", "read_wav", "write_wav"]


def __getattr__(name: str) -> Any:
    if name == "TextToSpeech":
        from services.tts.engine import TextToSpeech

        return TextToSpeech
    if name in ("read_wav", "write_wav"):
        from services.tts import wavio

        return getattr(wavio, name)
    raise AttributeError(f"module 'services.tts' has no attribute {name!r}")
