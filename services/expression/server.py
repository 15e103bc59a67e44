"""ExpressionService: audio (+ phoneme timeline) -> ARKit-52 frames, unary and Audio2Face-3D-style stream.

The model runs where LIKENESS_TRITON_URL points (Triton) or in-process when it is unset.
"""
from __future__ import annotations

import logging
from typing import Iterator

import grpc
import numpy as np

from services.common import config

from services.common.infra import wire
from services.common.domain.arkit import ARKIT_52
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.infra.grpc_errors import error_status
from services.common.infra.grpc_server import grpc_port, metrics_port, serve, start_metrics_server
from services.common.infra.inference import InferenceClient, client_from_env
from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2 as ex, expression_pb2_grpc
from services.common.domain.speech import Speech
from services.common.infra.tracing import configure, grpc_server_interceptors
from services.expression.animation import animate
from services.expression.diffusion.live import LiveAnimator

log = logging.getLogger(__name__)
DEFAULT_FPS = 25.0
MAX_AUDIO_SECONDS = config.get_float("LIKENESS_MAX_AUDIO_SECONDS")


def apply_gains(track: ExpressionTrack, params: ex.ExpressionParams) -> ExpressionTrack:
    """Audio2Face-style per-blendshape multipliers then offsets, clamped to [0, 1]."""
    if not params.blendshape_multipliers and not params.blendshape_offsets:
        return track
    gain, offset = np.ones(len(ARKIT_52), np.float32), np.zeros(len(ARKIT_52), np.float32)
    for field, table, target in (("blendshape_multipliers", params.blendshape_multipliers, gain),
                                 ("blendshape_offsets", params.blendshape_offsets, offset)):
        for name, value in table.items():
            if name not in ARKIT_52:
                raise InputError(f"params.{field}", f"{name!r} is not an ARKit-52 blendshape name")
            target[ARKIT_52.index(name)] = value
    return ExpressionTrack(track.fps, np.clip(track.weights * gain + offset, 0.0, 1.0), track.head_pose)


def _checked(params: ex.ExpressionParams) -> tuple[float, str, str]:
    """(fps, emotion, expressiveness) of the params, or InputError."""
    fps = params.fps or DEFAULT_FPS
    if not 1 <= fps <= 120:
        raise InputError("params.fps", f"must be from 1 to 120, got {fps}")
    if params.emotion not in wire.EMOTIONS:
        raise InputError("params.emotion", "unknown value")
    if params.expressiveness not in wire.EXPRESSIVENESS:
        raise InputError("params.expressiveness", "unknown value")
    return fps, wire.EMOTIONS[params.emotion], wire.EXPRESSIVENESS[params.expressiveness]


class ExpressionServicer(expression_pb2_grpc.ExpressionServiceServicer):
    def __init__(self, client: InferenceClient) -> None:
        self.client = client

    def _animate(self, speech: Speech, params: ex.ExpressionParams,
                 emotions: list[tuple[float, str, float]] | None = None,
                 motions: list[tuple[float, str, float]] | None = None) -> ExpressionTrack:
        """`emotions`: time-coded changes (seconds, emotion, strength) after params.emotion;
        `motions`: (seconds, motion, strength)."""
        if speech.duration > MAX_AUDIO_SECONDS:
            raise InputError("audio", f"{speech.duration:.0f} s is over the limit of {MAX_AUDIO_SECONDS:.0f} s")
        fps, emotion, expressiveness = _checked(params)
        track = animate(self.client, speech, fps=fps, seed=params.seed, emotion=emotion,
                        expressiveness=expressiveness, emotions=emotions or (), motions=motions or ())
        return apply_gains(track, params)

    def Animate(self, request: ex.AnimateRequest, context) -> ex.AnimateResponse:
        samples, rate = wire.audio_from_pb(request.audio)
        emotions = [wire.timed_emotion_from_pb(e, f"emotions[{i}]") for i, e in enumerate(request.emotions)]
        motions = [wire.timed_motion_from_pb(m, f"motions[{i}]") for i, m in enumerate(request.motions)]
        track = self._animate(wire.speech_from_pb(samples, rate, request.timeline), request.params, emotions,
                              motions)
        return ex.AnimateResponse(header=wire.blendshape_header(track.fps), frames=wire.frames_to_pb(track))

    def StreamExpression(self, request_iterator, context) -> Iterator[ex.StreamExpressionResponse]:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InputError("header", "the first message must be the header")
        header = first.header
        if header.HasField("timeline") and header.timeline.phones:
            yield from self._stream_with_timeline(header, request_iterator)
        else:
            yield from self._stream_live(header, request_iterator)

    def _stream_with_timeline(self, header: ex.StreamExpressionHeader,
                              request_iterator) -> Iterator[ex.StreamExpressionResponse]:
        """Known phone timings: the procedural model needs the whole timeline and its prosody, so the
        frames go out once the audio is complete."""
        chunks: list[bytes] = []
        emotions: list[tuple[float, str, float]] = []
        motions: list[tuple[float, str, float]] = []
        for kind, message in _requests(request_iterator):
            if kind == "audio_chunk":
                chunks.append(message.audio_chunk)
            elif kind == "motion":
                motions.append(wire.timed_motion_from_pb(message.motion))
            else:  # from its time code on (eased in), on top of the header's emotion
                emotions.append(wire.timed_emotion_from_pb(message.emotion))
        samples = wire.pcm_to_float(b"".join(chunks), header.audio_format, field="audio_format")
        track = self._animate(wire.speech_from_pb(samples, header.audio_format.sample_rate, header.timeline),
                              header.params, emotions, motions)
        yield ex.StreamExpressionResponse(header=wire.blendshape_header(track.fps))
        for frame in wire.frames_to_pb(track):
            yield ex.StreamExpressionResponse(frame=frame)
        yield ex.StreamExpressionResponse(status=error_status(grpc.StatusCode.OK, "ok"))

    def _stream_live(self, header: ex.StreamExpressionHeader,
                     request_iterator) -> Iterator[ex.StreamExpressionResponse]:
        """Audio only: frames go out while the audio is still arriving (diffusion.live), each as soon
        as no later audio can change it."""
        params = header.params
        fps, emotion, expressiveness = _checked(params)
        pcm = wire.PcmStream(header.audio_format)
        live = LiveAnimator(self.client, header.audio_format.sample_rate, fps=fps, seed=params.seed,
                            emotion=emotion, expressiveness=expressiveness)
        yield ex.StreamExpressionResponse(header=wire.blendshape_header(fps))
        sent = 0
        for kind, message in _requests(request_iterator):
            if kind == "emotion":
                live.push_emotion(*wire.timed_emotion_from_pb(message.emotion))
                continue
            if kind == "motion":
                live.push_motion(*wire.timed_motion_from_pb(message.motion))
                continue
            live.push_audio(pcm.decode(message.audio_chunk))
            if live.features.duration > MAX_AUDIO_SECONDS:
                raise InputError("audio", f"the stream is over the limit of {MAX_AUDIO_SECONDS:.0f} s")
            for frame in self._live_frames(live, params, sent):
                sent += 1
                yield ex.StreamExpressionResponse(frame=frame)
        pcm.finish()
        live.end()
        for frame in self._live_frames(live, params, sent):
            yield ex.StreamExpressionResponse(frame=frame)
        yield ex.StreamExpressionResponse(status=error_status(grpc.StatusCode.OK, "ok"))

    @staticmethod
    def _live_frames(live: LiveAnimator, params: ex.ExpressionParams, sent: int) -> list[common_pb2.ExpressionFrame]:
        weights, pose = live.take()
        track = apply_gains(ExpressionTrack(live.fps, weights, pose), params)
        return [common_pb2.ExpressionFrame(time_code=(sent + i) / live.fps, weights=track.weights[i].tolist(),
                                   head_pose=track.head_pose[i].tolist()) for i in range(len(track))]


def _requests(request_iterator) -> Iterator[tuple[str, ex.StreamExpressionRequest]]:
    """(kind, message) of the audio chunks, emotions and motions after the header, up to end_of_audio."""
    for message in request_iterator:
        kind = message.WhichOneof("request")
        if kind == "end_of_audio":
            return
        if kind not in ("audio_chunk", "emotion", "motion"):
            raise InputError("header", "only one header may be sent")
        yield kind, message
    raise InputError("end_of_audio", "the stream must end with end_of_audio")


def main() -> None:
    logging.basicConfig(level=config.get_str("LIKENESS_LOG_LEVEL"))
    configure("expression")
    start_metrics_server(metrics_port(9103))
    server = serve([(expression_pb2_grpc.add_ExpressionServiceServicer_to_server,
                     ExpressionServicer(client_from_env()))],
                   port=grpc_port(50053), service_names=["likeness.v1.ExpressionService"],
                   interceptors=grpc_server_interceptors())
    server.wait_for_termination()


if __name__ == "__main__":
    main()
