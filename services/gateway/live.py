"""A live video (LiveVideo): the caller's audio goes on to the expression and render services as it
arrives, the frames come back from the expression service while the audio still flows and go on to
the render service, and the render service's fragmented MP4 (the frames with that audio) goes back
to the caller. Three calls run at once, wired by two queues:

    caller audio --+--> expression.StreamExpression --frames--+
                   +-------------------- audio ---------------+--> render.RenderVideo --> MP4 bytes

With header.speech the caller sends text instead (an LLM's reply as it is written): the gateway
speaks it a sentence at a time through the TTS service (services.common.live.script) and sends that
audio on the same way, with silence while the writer thinks; the end carries captions. Either way the
audio goes on at most LIKENESS_LIVE_SPEECH_LEAD_S ahead of the clock, so that an interrupt (the user
spoke over the avatar) can drop the rest (services.common.live.pacing).

Nothing is stored; a failure anywhere ends all three calls.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np

from services.common.domain import captions
from services.common.infra import wire
from services.common.domain.errors import InputError
from services.common.infra.deadline import Deadline
from services.common.live.listening import LISTEN, STOP_LISTENING, Listen
from services.common.live.pacing import INTERRUPT, Interrupt, LivePiece, paced_audio
from services.common.live.script import LiveScript, paced
from likeness_client.proto.likeness.v1 import (common_pb2, expression_pb2 as ex, gateway_pb2 as gw,
                                                   render_pb2 as rd)
from services.common.domain.speech import Speech
from services.common.infra.tracing import span
from services.gateway.jobs import Job
from services.gateway.metrics import LIVE_IDLE, LIVE_INTERRUPTS
from services.gateway.runner import JobRunner, _as_job_failure, expression_params

_END = object()


def _drain(q: queue.Queue) -> Iterator:
    while (item := q.get()) is not _END:
        yield item


def run_live(runner: JobRunner, job: Job, audio_format: common_pb2.AudioFormat | None,
             incoming: Iterator[gw.LiveVideoRequest]) -> Iterator[tuple[str, object]]:
    """Yields ("ready", None) once the rig is prepared, then ("media", bytes) in order, and
    ("interrupted", LiveInterrupted) as interrupts cut the speech.
    `audio_format` None: the caller sends text (job.request has the voice), spoken here."""
    request = job.request
    deadline = Deadline(runner.deadline_s)
    with span("live", {"job.id": job.job_id}), _as_job_failure():
        rig = runner._prepare_rig(job, deadline)
        speak = None if audio_format is not None else _speaker(runner, job, deadline)
        yield "ready", None
        to_expression: queue.Queue = queue.Queue()
        to_render: queue.Queue = queue.Queue()

        def headers(fmt: common_pb2.AudioFormat) -> None:
            """Both calls' first message, once the audio's format is known."""
            to_expression.put(ex.StreamExpressionRequest(header=ex.StreamExpressionHeader(
                audio_format=fmt, params=expression_params(request))))
            to_render.put(rd.RenderVideoRequest(header=rd.RenderVideoHeader(
                rig_object=rig.rig, video=runner.spec(job), blendshapes=wire.blendshape_header(request.fps),
                seed=request.seed, stream_media=True, live_audio_format=fmt)))

        def audio(chunk: bytes) -> None:
            to_render.put(rd.RenderVideoRequest(audio_chunk=chunk))
            to_expression.put(ex.StreamExpressionRequest(audio_chunk=chunk))

        expression = runner.expression.StreamExpression(_drain(to_expression), timeout=deadline.remaining())
        render = runner.render.RenderVideo(_drain(to_render), timeout=deadline.remaining())
        failures: list[BaseException] = []
        over = threading.Event()  # the video ended (or the caller went away): no more idle silence
        # The caller listens while the speech it sent plays: not a silence that the gateway's idle limit
        # (LIKENESS_STREAM_IDLE_S, services/gateway/aio.py) counts. When the timeline started playing:
        speaking, started_at = getattr(incoming, "speaking", lambda until: None), []
        interrupts: queue.Queue = queue.Queue()  # LiveInterrupted notices for the caller
        script: LiveScript | None = None

        def stop(exc: BaseException) -> None:
            failures.append(exc)
            for call in (expression, render):
                call.cancel()

        def send(piece: LivePiece) -> None:
            """A piece of the timeline to both services: its emotion changes and motions, then its audio."""
            for emotion in piece.emotions:
                to_expression.put(ex.StreamExpressionRequest(emotion=wire.timed_emotion_to_pb(*emotion)))
            for motion in piece.motions:
                to_expression.put(ex.StreamExpressionRequest(motion=wire.timed_motion_to_pb(*motion)))
            if len(piece.audio):
                audio(wire.audio_to_pb(piece.audio, piece.sample_rate, common_pb2.AUDIO_ENCODING_PCM_F32LE).data)
                now = time.monotonic()
                if not started_at:
                    started_at.append(now)
                if not piece.idle:  # (the face resting while the writer thinks is the caller's silence)
                    length = len(piece.audio) / piece.sample_rate
                    speaking(max(started_at[0] + piece.start_s + length, now + length))

        def interrupted(time_code: float, heard_text: str) -> None:
            interrupts.put(gw.LiveInterrupted(time_code=time_code, heard_text=heard_text))

        def float_format(rate: int) -> common_pb2.AudioFormat:
            return common_pb2.AudioFormat(sample_rate=rate, channels=1, encoding=common_pb2.AUDIO_ENCODING_PCM_F32LE)

        def from_caller() -> None:
            """The caller's audio (and emotion changes, motions, interrupts) to both services, at most
            LIKENESS_LIVE_SPEECH_LEAD_S ahead of the clock."""
            try:
                rate = audio_format.sample_rate
                headers(float_format(rate))
                for piece in paced_audio(_audio_items(incoming, audio_format), rate, seed=request.seed,
                                         on_interrupt=interrupted):
                    if over.is_set():
                        return
                    send(piece)
                to_expression.put(ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio()))
            except BaseException as exc:  # (the caller went away, or sent something wrong)
                stop(exc)
            finally:
                to_expression.put(_END)

        def spoken_text() -> None:
            """The caller's text, spoken a sentence at a time, to both services."""
            nonlocal script
            try:
                script = LiveScript(speak, auto_emotion=request.emotion == "auto", auto_motions=request.auto_motions)
                for n, piece in enumerate(paced(_texts(incoming), script, seed=request.seed,
                                                on_interrupt=interrupted)):
                    if over.is_set():
                        return
                    if n == 0:
                        headers(float_format(piece.sample_rate))
                    if piece.idle:
                        LIVE_IDLE.inc(len(piece.audio) / piece.sample_rate)
                    send(piece)
                to_expression.put(ex.StreamExpressionRequest(end_of_audio=ex.EndOfAudio()))
            except BaseException as exc:
                stop(exc)
            finally:
                to_expression.put(_END)

        def frames_to_render() -> None:
            """Each frame from the expression service on to the render service as it comes."""
            try:
                for response in expression:
                    if response.HasField("frame"):
                        to_render.put(rd.RenderVideoRequest(frames=rd.ExpressionFrameChunk(frames=[response.frame])))
                to_render.put(rd.RenderVideoRequest(end=rd.EndOfFrames()))
            except BaseException as exc:
                stop(exc)
            finally:
                to_render.put(_END)

        workers = [threading.Thread(target=target, name=f"live-{name}", daemon=True)
                   for name, target in (("caller", from_caller if speak is None else spoken_text),
                                        ("frames", frames_to_render))]
        for worker in workers:
            worker.start()
        try:
            with span("stage render", {"stage": "render"}):
                for response in render:  # (media flows on while the stream is open: the face idles)
                    while not interrupts.empty():
                        yield "interrupted", interrupts.get()
                    if response.HasField("media"):
                        yield "media", response.media
                while not interrupts.empty():
                    yield "interrupted", interrupts.get()
        except grpc.RpcError:
            if not failures:
                raise
        finally:  # the caller went away, or a failure: end every call and both workers
            over.set()
            for call in (expression, render):
                call.cancel()
            to_expression.put(_END), to_render.put(_END)
        for worker in workers:
            worker.join(timeout=5)
        if failures:
            # the first failure, not the cancellations it caused (a caller's stream that broke off raises
            # an RpcError without a code)
            first = next((f for f in failures if not (isinstance(f, grpc.RpcError) and (
                not hasattr(f, "code") or f.code() == grpc.StatusCode.CANCELLED))), failures[0])
            raise first
        if script is not None:
            job.warnings.extend(w for w in script.warnings if w not in job.warnings)
        if script is not None and script.words:
            cues = captions.build_cues(script.words, script.text, script.duration)
            job.result.update(captions_vtt=captions.to_webvtt(cues), captions_srt=captions.to_srt(cues))


def _turn_taking(message: gw.LiveVideoRequest) -> Interrupt | Listen | None:
    """An interrupt or a change of listening (either kind of stream), else None."""
    kind = message.WhichOneof("request")
    if kind == "interrupt":
        LIVE_INTERRUPTS.inc()
        return INTERRUPT
    if kind == "listening":
        return LISTEN if message.listening else STOP_LISTENING
    return None


def _audio_items(incoming: Iterator[gw.LiveVideoRequest], audio_format: common_pb2.AudioFormat) -> Iterator:
    """The messages of a LiveVideo with audio as paced_audio items, until end_of_audio: the audio, emotion
    changes and motions where they come, interrupts and listening."""
    pcm, rate, heard = wire.PcmStream(audio_format, "audio_format"), audio_format.sample_rate, False
    nothing = np.zeros(0, np.float32)
    for message in incoming:
        kind = message.WhichOneof("request")
        if (turn := _turn_taking(message)) is not None:
            yield turn
        elif kind == "audio_chunk":
            heard = heard or bool(message.audio_chunk)
            yield pcm.decode(message.audio_chunk)
        elif kind == "emotion":
            yield LivePiece(nothing, rate, 0.0, emotions=[wire.timed_emotion_from_pb(message.emotion)])
        elif kind == "motion":
            yield LivePiece(nothing, rate, 0.0, motions=[wire.timed_motion_from_pb(message.motion)])
        elif kind == "end_of_audio":
            if not heard:
                raise InputError("audio_chunk", "no audio was sent")
            pcm.finish()
            return
        elif kind == "text":
            raise InputError("text", "goes with header.speech; this stream sends audio")
        else:
            raise InputError("header", "only one header may be sent")
    raise InputError("end_of_audio", "the stream must end with end_of_audio")


def _texts(incoming: Iterator[gw.LiveVideoRequest]) -> Iterator[str | Interrupt | Listen]:
    """The text messages (and interrupts, listening) of a LiveVideo with speech, until end_of_audio."""
    for message in incoming:
        kind = message.WhichOneof("request")
        if (turn := _turn_taking(message)) is not None:
            yield turn
        elif kind == "text":
            yield message.text
        elif kind == "end_of_audio":
            return
        elif kind in ("emotion", "motion"):
            raise InputError(kind, f"with speech, write {kind} tags in the text ([happy], [nod] ...): a time "
                                   "code is not known before the text is spoken")
        elif kind == "audio_chunk":
            raise InputError("audio_chunk", "this stream sends text (header.speech); audio goes with audio_format")
        else:
            raise InputError("header", "only one header may be sent")
    raise InputError("end_of_audio", "the stream must end with end_of_audio")


def _speaker(runner: JobRunner, job: Job, deadline: Deadline):
    """text -> Speech through the TTS service, in the header's voice (a cloned one's profile built once)."""
    request = job.request
    profile = runner._voice_profile(request.voice_sample.key, deadline) if request.voice_sample else None

    def speak(text: str) -> Speech:
        try:
            response = runner.synthesize(request, text, profile, deadline)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # what the text says: the caller's field
                raise InputError("text", f"{text!r}: {exc.details()}") from None
            raise
        job.warnings.extend(w for w in response.warnings if w not in job.warnings)
        samples, rate = wire.audio_from_pb(response.audio)
        return wire.speech_from_pb(samples, rate, response.timeline)

    return speak
