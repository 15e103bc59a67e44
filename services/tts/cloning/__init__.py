"""Voice cloning from a short sample: WORLD conversion of the neural TTS toward the speaker.

    cloner = VoiceCloner(tts, client)          # services.tts.TextToSpeech, an InferenceClient
    profile = cloner.build_profile(wav_bytes)  # once per sample; profile.to_bytes() is storable
    speech = cloner.clone(tts.synthesize(script), profile)

Models (model_repository/, services.common.infra.inference.MODELS): speaker_encoder (resemblyzer),
voice_converter (WORLD re-synthesis), timbre_matcher (EQ fitted through the speaker encoder).
"""
from services.tts.cloning.cloner import VoiceCloner
from services.tts.cloning.profile import SpeakerProfile

__all__ = ["SpeakerProfile", "VoiceCloner"]
