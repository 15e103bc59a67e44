"""TtsService: script -> speech + phoneme timeline (optionally in a cloned voice); a recording ->
prepared audio + timeline (forced alignment with a transcript, empty without); voice sample -> profile.

The neural voice runs where LIKENESS_TRITON_URL points (Triton) or in-process when it is unset;
phonemization (espeak-ng) and alignment (pocketsphinx) run here.
"""
from __future__ import annotations

import logging

from services.common import config

from services.common.infra import wire
from services.common.domain.audio_io import decode_audio
from services.common.domain.errors import InputError
from services.common.infra.grpc_server import grpc_port, metrics_port, serve, start_metrics_server
from services.common.infra.inference import client_from_env
from likeness_client.proto.likeness.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from services.common.infra.storage import ObjectNotFoundError, Storage
from services.common.infra.tracing import configure, grpc_server_interceptors
from services.tts.cloning import SpeakerProfile, VoiceCloner
from services.tts.cloning.cloner import sample_sha256
from services.tts.engine import TextToSpeech
from services.common.script.pauses import speak_with_pauses, strip_pauses
from services.tts.phonemize import language_code
from services.tts.cloning.store import is_current
from services.tts.recording import driving_speech, prepare_recording
from services.tts.tensor_model import ModelVoice
from services.tts.voices import VoiceBank, check_voice

log = logging.getLogger(__name__)


def espeak_language(tag: str) -> str:
    """BCP-47 ("en-US") -> espeak-ng voice name ("en-us"); empty -> the default."""
    return language_code(tag) or "en-us"


class TtsServicer(tts_pb2_grpc.TtsServiceServicer):
    def __init__(self, tts: TextToSpeech, storage: Storage | None = None,
                 cloner: VoiceCloner | None = None) -> None:
        self.tts = tts
        self.voices = VoiceBank(tts)
        self._storage = storage
        self._cloner = cloner

    @property
    def cloner(self) -> VoiceCloner:
        if self._cloner is None:  # the speaker encoder is only loaded when a voice is cloned
            client = getattr(self.tts.voice, "client", None) or client_from_env()
            self._cloner = VoiceCloner(self.tts, client, voices=self.voices)
        return self._cloner

    @property
    def storage(self) -> Storage:
        if self._storage is None:  # only calls that reference stored objects need it
            self._storage = Storage.from_env()
        return self._storage

    def _audio(self, source: common_pb2.AudioSource, field: str):
        which = source.WhichOneof("source")
        if which == "audio":
            return wire.audio_from_pb(source.audio, field=f"{field}.audio")
        if which == "object":
            try:
                data = self.storage.get_bytes(source.object.key)
            except ObjectNotFoundError:
                raise InputError(f"{field}.object", f"{source.object.key} not found") from None
            return decode_audio(data, field=field)
        raise InputError(field, "is required")

    def _raw_audio(self, source: common_pb2.AudioSource, field: str) -> bytes | tuple:
        """Encoded bytes of a stored object (decoded by the caller) or inline PCM as (samples, rate)."""
        which = source.WhichOneof("source")
        if which == "object":
            try:
                return self.storage.get_bytes(source.object.key)
            except ObjectNotFoundError:
                raise InputError(f"{field}.object", f"{source.object.key} not found") from None
        return self._audio(source, field)

    def _profile(self, reference: tts_pb2.VoiceReference) -> SpeakerProfile:
        which = reference.WhichOneof("source")
        if which == "sample":
            return self.cloner.build_profile(self._raw_audio(reference.sample, "voice_reference.sample"),
                                             field="voice_reference.sample")
        if which == "profile":
            try:
                data = self.storage.get_bytes(reference.profile.key)
            except ObjectNotFoundError:
                raise InputError("voice_reference.profile", f"{reference.profile.key} not found") from None
            return SpeakerProfile.from_bytes(data, "voice_reference.profile")
        if which == "profile_data":
            return SpeakerProfile.from_bytes(reference.profile_data)
        raise InputError("voice_reference", "needs a sample, profile or profile_data")

    def Synthesize(self, request: tts_pb2.SynthesizeRequest, context) -> tts_pb2.SynthesizeResponse:
        warnings: list[str] = []
        if request.voice and request.HasField("voice_reference"):
            raise InputError("voice", "a cloned voice (voice_reference) replaces the built-in one: send one")
        voice = check_voice(request.voice)
        profile = self._profile(request.voice_reference) if request.HasField("voice_reference") else None
        language = espeak_language(request.language)
        if profile is not None:  # spoken in the cloned voice (Kokoro style, or Piper + WORLD)
            speech = speak_with_pauses(request.text, lambda text: self.cloner.speak(
                text, profile, seed=request.seed, speed=request.speed or 1.0, language=language))
            warnings += profile.warnings
        else:
            speech = speak_with_pauses(request.text, lambda text: self.voices.speak(
                text, voice, seed=request.seed, speed=request.speed or 1.0, language=language))
        return tts_pb2.SynthesizeResponse(
            audio=wire.audio_to_pb(speech.audio, speech.sample_rate, request.output_encoding),
            timeline=wire.timeline_to_pb(speech, language), warnings=warnings)

    def Align(self, request: tts_pb2.AlignRequest, context) -> tts_pb2.AlignResponse:
        """Trims and normalises the recording; with a transcript, aligns it. Without one, the timeline
        is empty (the expression stage then works from the audio alone)."""
        prepared = prepare_recording(self._raw_audio(request.audio, "audio"), field="audio")
        speech = driving_speech(prepared, strip_pauses(request.transcript), field="audio",
                                client=getattr(getattr(self.tts, "voice", None), "client", None))
        return tts_pb2.AlignResponse(timeline=wire.timeline_to_pb(speech, espeak_language(request.language)),
                                     audio=wire.audio_to_pb(speech.audio, speech.sample_rate),
                                     warnings=prepared.warnings)

    def BuildSpeakerProfile(self, request: tts_pb2.BuildSpeakerProfileRequest, context):
        """With `output` set and a current profile already there (same build method), that one is
        returned without rebuilding (`reused`): the object store is the profile cache."""
        if not request.HasField("sample"):
            raise InputError("sample", "is required")
        output = request.output.key if request.HasField("output") else ""
        sample = self._raw_audio(request.sample, "sample")
        profile = self._stored_current_profile(output, sample_sha256(sample)) if output else None
        reused = profile is not None
        if profile is None:
            profile = self.cloner.build_profile(sample, field="sample")
        data = profile.to_bytes()
        response = tts_pb2.BuildSpeakerProfileResponse(
            profile_data=data, embedding=profile.embedding.tolist(), voiced_seconds=profile.voiced_seconds,
            warnings=profile.warnings, reused=reused)
        if output:
            info = self.storage.stat(output) if reused else self.storage.put_bytes(output, data, "application/json")
            response.profile.CopyFrom(common_pb2.ObjectRef(bucket=info.bucket, key=info.key,
                                                           size_bytes=info.size, content_type=info.content_type))
        return response

    def _stored_current_profile(self, key: str, sha: str) -> SpeakerProfile | None:
        """The profile stored at `key` if it is there, readable, of this sample and built by this
        service's method."""
        try:
            profile = SpeakerProfile.from_bytes(self.storage.get_bytes(key), "output")
        except (ObjectNotFoundError, InputError):  # none yet, or unreadable: build (and overwrite) it
            return None
        return profile if is_current(profile) and profile.sample_sha256 == sha else None


def main() -> None:
    logging.basicConfig(level=config.get_str("LIKENESS_LOG_LEVEL"))
    configure("tts")
    tts = TextToSpeech(voice=ModelVoice(client_from_env()))
    start_metrics_server(metrics_port(9102))
    server = serve([(tts_pb2_grpc.add_TtsServiceServicer_to_server, TtsServicer(tts))],
                   port=grpc_port(50052), service_names=["likeness.v1.TtsService"],
                   interceptors=grpc_server_interceptors())
    server.wait_for_termination()


if __name__ == "__main__":
    main()
