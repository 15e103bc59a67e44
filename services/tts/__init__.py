"""TTS stage: script -> Speech (neural audio + exact phone/word timings), voice cloning, and forced
alignment of a recording to its script.

The names below are the stage's facade: other packages import them from here (tests/test_layers.py),
each loaded on first use (importing the package stays cheap).
"""
from services.common.lazy import lazy_exports

_EXPORTS = {
    "TextToSpeech": "engine", "check_script_length": "engine", "check_speed": "engine",
    "ModelVoice": "tensor_model", "KokoroVoice": "kokoro", "read_wav": "wavio", "write_wav": "wavio",
    # voices: built-in and cloned
    "VOICES": "voices", "DEFAULT_VOICE": "voices", "VoiceBank": "voices", "check_voice": "voices",
    "VoiceCloner": "cloning.VoiceCloner", "ProfileCache": "cloning.store.ProfileCache",
    "profile_key": "cloning.store.profile_key", "warp_frequency_axis": "cloning.world.warp_frequency_axis",
    # languages
    "check_language": "phonemize", "check_readable": "phonemize", "language_code": "phonemize",
    # a user's own recording
    "DRIVING": "recording", "driving_speech": "recording", "prepare_recording": "recording",
    "align_speech": "align.align",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
