"""TtsService: script -> speech + phoneme timeline; recording + transcript -> timeline (alignment).

The neural voice runs where LIKENESS_TRITON_URL points (Triton) or in-process when it is unset;
phonemization (espeak-ng) and alignment (pocketsphinx) run here.
"""
from __future__ import annotations

import logging
import os

import grpc

from services.common import wire
from services.common.audio_io import decode_audio
from services.common.errors import InputError
from services.common.grpc_server import grpc_port, metrics_port, serve, start_metrics_server
from services.common.inference import client_from_env
from services.common.proto_gen.likeness.v1 import common_pb2, tts_pb2, tts_pb2_grpc
from services.common.storage import ObjectNotFoundError, Storage
from services.common.tracing import configure, grpc_server_interceptors
from services.tts.engine import TextToSpeech
from services.tts.tensor_model import ModelVoice

log = logging.getLogger(__name__)


def espeak_language(tag: str) -> str:
    """BCP-47 ("en-US") -> espeak-ng voice name ("en-us"); empty -> the default."""
    return tag.strip().lower().replace("_", "-") or "en-us"


class TtsServicer(tts_pb2_grpc.TtsServiceServicer):
    def __init__(self, tts: TextToSpeech, storage: Storage | None = None) -> None:
        self.tts = tts
        self._storage = storage

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

    def Synthesize(self, request: tts_pb2.SynthesizeRequest, context) -> tts_pb2.SynthesizeResponse:
        warnings = []
        if request.HasField("voice_reference"):
            warnings.append("voice cloning is not available yet: the default voice was used")
        language = espeak_language(request.language)
        speech = self.tts.synthesize(request.text, seed=request.seed, speed=request.speed or 1.0,
                                     language=language)
        return tts_pb2.SynthesizeResponse(
            audio=wire.audio_to_pb(speech.audio, speech.sample_rate, request.output_encoding),
            timeline=wire.timeline_to_pb(speech, language), warnings=warnings)

    def Align(self, request: tts_pb2.AlignRequest, context) -> tts_pb2.AlignResponse:
        from services.tts.align import align

        if not request.transcript.strip():
            raise InputError("transcript", "is empty: audio-only driving is not available yet")
        samples, rate = self._audio(request.audio, "audio")
        speech = align(samples, rate, request.transcript)
        return tts_pb2.AlignResponse(timeline=wire.timeline_to_pb(speech, espeak_language(request.language)),
                                     audio=wire.audio_to_pb(speech.audio, speech.sample_rate))

    def BuildSpeakerProfile(self, request, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "voice cloning is not available yet")


def main() -> None:
    logging.basicConfig(level=os.environ.get("LIKENESS_LOG_LEVEL", "INFO"))
    configure("tts")
    tts = TextToSpeech(voice=ModelVoice(client_from_env()))
    start_metrics_server(metrics_port(9102))
    server = serve([(tts_pb2_grpc.add_TtsServiceServicer_to_server, TtsServicer(tts))],
                   port=grpc_port(50052), service_names=["likeness.v1.TtsService"],
                   interceptors=grpc_server_interceptors())
    server.wait_for_termination()


if __name__ == "__main__":
    main()
