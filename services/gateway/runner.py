"""Runs one video job across the services: tts -> expression -> render, checkpointed in storage.

Every stage writes its output under jobs/<job_id>/ before the next starts, and skips itself when
that output already exists, so a retried or re-queued job resumes from the last finished stage and
a failure leaves the inputs and finished stages intact. Every call carries the job's remaining
deadline and is retried with backoff on UNAVAILABLE (a service restarting).

`stream` runs the same stages for a live video (StreamVideo): the render service sends the video
back while it encodes it instead of storing it, and nothing is resumed.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
from google.protobuf import json_format

from services.common import config
from services.common.domain import captions
from services.common.domain.audio_io import decode_audio, encode_wav
from services.common.domain.expression_track import ExpressionTrack

from services.common.infra import wire
from services.common.infra.deadline import Deadline, DeadlineExceeded
from services.common.infra.grpc_client import open_channel, with_retries
from services.common.infra.grpc_errors import field_violations
from likeness_client.proto.likeness.v1 import (common_pb2, expression_pb2, expression_pb2_grpc, render_pb2,
                                                   render_pb2_grpc, tts_pb2, tts_pb2_grpc)
from services.common.script.tags import timed_emotions, timed_motions
from services.common.domain.speech import Word
from services.common.infra.storage import Storage
from services.common.infra.tracing import span
from services.gateway.jobs import Job, JobContext, JobFailed
from services.gateway.metrics import STAGE_SECONDS
from services.pipeline.request import VideoRequest
from services.render import poster_suffix

log = logging.getLogger(__name__)
FRAMES_PER_CHUNK = 25


@dataclass(frozen=True)
class Downstream:
    tts: str
    expression: str
    render: str

    @classmethod
    def from_env(cls) -> "Downstream":
        return cls(tts=config.get_str("LIKENESS_TTS_ADDR"),
                   expression=config.get_str("LIKENESS_EXPRESSION_ADDR"),
                   render=config.get_str("LIKENESS_RENDER_ADDR"))


def _words(timeline: common_pb2.Timeline) -> list[Word]:
    return [Word(w.text, w.start, w.end) for w in timeline.words]


@contextmanager
def _as_job_failure() -> Iterator[None]:
    """A downstream call's failure as the job's (its code, message and first field violation), a
    passed deadline as DEADLINE_EXCEEDED."""
    try:
        yield
    except grpc.RpcError as exc:
        if not hasattr(exc, "code"):  # a caller's request stream that broke off (it went away)
            raise
        violations = field_violations(exc) if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else []
        raise JobFailed(exc.code().name, exc.details() or exc.code().name,
                        field=violations[0][0] if violations else "") from None
    except DeadlineExceeded as exc:
        raise JobFailed("DEADLINE_EXCEEDED", str(exc)) from None


def expression_params(request: VideoRequest) -> expression_pb2.ExpressionParams:
    return expression_pb2.ExpressionParams(fps=request.fps, seed=request.seed,
                                           emotion=wire.EMOTION_ENUM[request.base_emotion],
                                           expressiveness=wire.EXPRESSIVENESS_ENUM[request.expressiveness])


def job_keys(job_id: str, alpha: bool = False, prefix: str = "jobs") -> dict[str, str]:
    base = f"{prefix}/{job_id}"
    return {"audio": f"{base}/speech.wav", "timeline": f"{base}/timeline.json",
            "blendshapes": f"{base}/blendshapes.json", "video": f"{base}/video.mp4",
            "poster": f"{base}/poster{poster_suffix(alpha)}"}


class JobRunner:
    """Callable handed to the JobManager: run(job, ctx)."""

    def __init__(self, storage: Storage, downstream: Downstream, *,
                 # the default is read once, at import
                 deadline_s: float = config.get_float("LIKENESS_JOB_DEADLINE_S")) -> None:
        self.storage = storage
        self.deadline_s = deadline_s
        self.tts = tts_pb2_grpc.TtsServiceStub(open_channel(downstream.tts))
        self.expression = expression_pb2_grpc.ExpressionServiceStub(open_channel(downstream.expression))
        self.render = render_pb2_grpc.RenderServiceStub(open_channel(downstream.render))

    def __call__(self, job: Job, ctx: JobContext) -> None:
        deadline = Deadline(self.deadline_s)
        keys = job_keys(job.job_id, alpha=job.request.frame.alpha)
        with span("job", {"job.id": job.job_id, "job.attempt": job.attempts}), _as_job_failure():
            # the rig first: a photo without a face fails the job before any other work
            rig = self._prepare_rig(job, deadline)
            self._stage("tts", keys["timeline"], ctx, lambda: self._speech(job, keys, deadline))
            self._stage("expression", keys["blendshapes"], ctx, lambda: self._expression(job, keys, deadline))
            self._stage("render", keys["video"], ctx, lambda: self._render(job, keys, rig, deadline, ctx))
        job.result["video_key"] = keys["video"]
        if self.storage.exists(keys["poster"]):  # (not for jobs rendered before posters were made)
            job.result["poster_key"] = keys["poster"]
        if "frame_count" not in job.result:  # the render ran in an earlier attempt: the same facts
            self._video_facts(job, keys)
        if job.request.export_blendshapes:
            job.result["blendshapes_key"] = keys["blendshapes"]
        job.result.update(self._captions(keys))

    def stream(self, job: Job) -> Iterator[tuple[str, object]]:
        """A live video: the job's stages, the video sent back while it is encoded instead of stored.
        Yields ("timed", {frame_count, duration_s}) once the speech is animated, then ("media",
        bytes) in order; at the end job.result holds the captions and job.warnings the warnings.
        Intermediates go under streams/<id>/: removed once the video is through, kept after a failure."""
        deadline = Deadline(self.deadline_s)
        keys = job_keys(job.job_id, prefix="streams")
        with span("stream", {"job.id": job.job_id}), _as_job_failure():
            rig = self._prepare_rig(job, deadline)
            with span("stage tts", {"stage": "tts"}):
                self._speech(job, keys, deadline)
            with span("stage expression", {"stage": "expression"}):
                self._expression(job, keys, deadline)
            messages, count = self._render_messages(job, keys, rig, stream_media=True)
            yield "timed", {"frame_count": count, "duration_s": count / job.request.fps}
            # Not retried: bytes already sent cannot be taken back.
            call = self.render.RenderVideo(messages(), timeout=deadline.remaining())
            try:
                with span("stage render", {"stage": "render"}):
                    for response in call:
                        if response.HasField("media"):
                            yield "media", response.media
            finally:
                call.cancel()  # the client went away: stop rendering
            job.result.update(self._captions(keys))
        try:
            for key in (keys["audio"], keys["timeline"], keys["blendshapes"]):
                self.storage.delete(key)
        except Exception:  # the video is through: leftovers are not the viewer's problem
            log.warning("could not remove the intermediates of stream %s", job.job_id, exc_info=True)

    def _cues(self, keys: dict[str, str]) -> list:
        timeline = json_format.Parse(self.storage.get_bytes(keys["timeline"]), common_pb2.Timeline())
        return captions.build_cues(_words(timeline), timeline.text, timeline.duration or None)

    def _burned_captions(self, spec: common_pb2.VideoSpec, keys: dict[str, str]) -> list[render_pb2.CaptionCue]:
        if not spec.burn_in_captions:
            return []
        return [render_pb2.CaptionCue(start=c.start, end=c.end, text=c.text) for c in self._cues(keys)]

    def _captions(self, keys: dict[str, str]) -> dict[str, str]:
        """WebVTT and SRT captions from the stored timeline (none without words: a recording
        driven without a transcript)."""
        cues = self._cues(keys)
        return {"captions_vtt": captions.to_webvtt(cues), "captions_srt": captions.to_srt(cues)} if cues else {}

    def _stage(self, stage: str, output_key: str, ctx: JobContext, work) -> None:
        ctx.check_cancelled()
        if self.storage.exists(output_key):  # finished by an earlier attempt: resume after it
            ctx.stage_done(stage, output_key)
            return
        ctx.report(stage, 0.0)
        started = time.perf_counter()
        with span(f"stage {stage}", {"stage": stage}):
            work()
        STAGE_SECONDS.labels(stage).observe(time.perf_counter() - started)
        ctx.stage_done(stage, output_key)

    # -- stages --------------------------------------------------------------------------------

    def _speech(self, job: Job, keys: dict[str, str], deadline: Deadline) -> None:
        request = job.request
        text = request.spoken_script[0]
        if request.driving_audio is None:
            profile = self._voice_profile(request.voice_sample.key, deadline) if request.voice_sample else None
            response = self.synthesize(request, text, profile, deadline)
        else:
            recording = common_pb2.AudioSource(object=self._ref(request.driving_audio.key))
            call = tts_pb2.AlignRequest(audio=recording, transcript=text, language=request.language)
            response = with_retries(lambda t: self.tts.Align(call, timeout=t), deadline)
        job.warnings.extend(w for w in [*request.script_warnings, *response.warnings] if w not in job.warnings)
        samples, rate = wire.audio_from_pb(response.audio)
        self.storage.put_bytes(keys["audio"], encode_wav(samples, rate), "audio/wav")
        # the timeline is written last: its presence marks the stage finished
        self.storage.put_bytes(keys["timeline"], json_format.MessageToJson(response.timeline).encode(),
                               "application/json")

    def synthesize(self, request: VideoRequest, text: str, profile: common_pb2.ObjectRef | None,
                   deadline: Deadline) -> tts_pb2.SynthesizeResponse:
        """`text` spoken by the TTS service in the request's voice (`profile`: a cloned one's)."""
        call = tts_pb2.SynthesizeRequest(text=text, language=request.language, seed=request.seed,
                                         voice=request.voice, speed=request.speed)
        if profile is not None:
            call.voice_reference.profile.CopyFrom(profile)
        return with_retries(lambda t: self.tts.Synthesize(call, timeout=t), deadline)

    def _voice_profile(self, sample_key: str, deadline: Deadline) -> common_pb2.ObjectRef:
        """The sample's speaker profile (store.profile_key), built by the TTS service the
        first time a sample is used (again after its cloning method changed) and reused by later jobs."""
        from services.tts import profile_key  # (the cloning package and scipy: ~1 s the gateway needs only here)

        name = sample_key.rsplit("/", 1)[-1]
        sha = name if sample_key.startswith("assets/") else hashlib.sha256(self.storage.get_bytes(sample_key)).hexdigest()
        key = profile_key(sha)
        # Always asked: the TTS service reuses the stored profile when its cloning method built it
        # (the gateway cannot know that method) and rebuilds it otherwise.
        call = tts_pb2.BuildSpeakerProfileRequest(sample=common_pb2.AudioSource(object=self._ref(sample_key)),
                                                  output=self._ref(key))
        with span("speaker profile"):
            with_retries(lambda t: self.tts.BuildSpeakerProfile(call, timeout=t), deadline)
        return self._ref(key)

    def _expression(self, job: Job, keys: dict[str, str], deadline: Deadline) -> None:
        request = job.request
        samples, rate = decode_audio(self.storage.get_bytes(keys["audio"]))
        timeline = json_format.Parse(self.storage.get_bytes(keys["timeline"]), common_pb2.Timeline())
        text, tags = request.spoken_script  # (tag offsets are in the script as written)
        words = _words(timeline)
        emotions = [wire.timed_emotion_to_pb(*e) for e in [*timed_emotions(tags, words, text), *request.emotions]]
        motions = [wire.timed_motion_to_pb(*m) for m in [*timed_motions(tags, words, text), *request.motions]]
        call = expression_pb2.AnimateRequest(
            audio=wire.audio_to_pb(samples, rate), timeline=timeline, emotions=emotions, motions=motions,
            params=expression_params(request))
        response = with_retries(lambda t: self.expression.Animate(call, timeout=t), deadline)
        track = wire.track_from_pb(response.header.fps, list(response.frames))
        self.storage.put_bytes(keys["blendshapes"], track.to_json().encode(), "application/json")

    def _prepare_rig(self, job: Job, deadline: Deadline) -> render_pb2.PrepareRigResponse:
        """Cached by the render service (photo sha256 + size), so a resumed job pays nothing."""
        call = render_pb2.PrepareRigRequest(photo_object=self._ref(job.request.photo.key), video=self.spec(job))
        with span("prepare rig"):
            rig = with_retries(lambda t: self.render.PrepareRig(call, timeout=t), deadline)
        job.warnings.extend(w for w in rig.warnings if w not in job.warnings)
        return rig

    def _render_messages(self, job: Job, keys: dict[str, str], rig: render_pb2.PrepareRigResponse,
                         **header_fields) -> tuple[Callable[[], Iterator[render_pb2.RenderVideoRequest]], int]:
        """(a factory of the RenderVideo request stream: header, frame chunks, end; the frame count)."""
        spec = self.spec(job)
        track = ExpressionTrack.from_json(self.storage.get_bytes(keys["blendshapes"]).decode())
        frames = wire.frames_to_pb(track)
        header = render_pb2.RenderVideoHeader(
            rig_object=rig.rig, video=spec, audio=common_pb2.AudioSource(object=self._ref(keys["audio"])),
            blendshapes=wire.blendshape_header(track.fps), expected_frames=len(frames),
            seed=job.request.seed, captions=self._burned_captions(spec, keys), **header_fields)

        def messages():
            yield render_pb2.RenderVideoRequest(header=header)
            for i in range(0, len(frames), FRAMES_PER_CHUNK):
                yield render_pb2.RenderVideoRequest(
                    frames=render_pb2.ExpressionFrameChunk(frames=frames[i:i + FRAMES_PER_CHUNK]))
            yield render_pb2.RenderVideoRequest(end=render_pb2.EndOfFrames())

        return messages, len(frames)

    def _render(self, job: Job, keys: dict[str, str], rig: render_pb2.PrepareRigResponse, deadline: Deadline,
                ctx: JobContext) -> None:
        messages, _ = self._render_messages(
            job, keys, rig, poster=self._ref(keys["poster"]),
            output=common_pb2.ObjectRef(bucket=self.storage.bucket, key=keys["video"],
                                        content_type="video/webm" if job.request.frame.alpha else "video/mp4"))

        def stream(timeout: float) -> render_pb2.RenderResult:
            call = self.render.RenderVideo(messages(), timeout=timeout)
            # A cancel stops the render at once, not at the next progress message (where report()
            # would notice it; they come every 25 frames rendered, none while the video is stored).
            forget = ctx.on_cancel(call.cancel)
            try:
                for response in call:
                    if response.HasField("progress") and response.progress.frames_total:
                        ctx.report("render", response.progress.frames_rendered / response.progress.frames_total)
                    elif response.HasField("result"):
                        return response.result
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.CANCELLED:
                    ctx.check_cancelled()  # JobCancelled, not a failure
                raise
            finally:
                forget()
                call.cancel()  # no-op when finished
            raise JobFailed("INTERNAL", "the render stream ended without a result")

        result = with_retries(stream, deadline)
        job.warnings.extend(w for w in result.warnings if w not in job.warnings)
        job.result.update(frame_count=str(result.frame_count), duration_s=f"{result.duration_seconds:.3f}",
                          width=str(result.frame_size.width), height=str(result.frame_size.height))

    def _video_facts(self, job: Job, keys: dict[str, str]) -> None:
        """Frame count, duration and frame size of a video rendered before (from its track and spec)."""
        track = ExpressionTrack.from_json(self.storage.get_bytes(keys["blendshapes"]).decode())
        width, height = job.request.frame.frame_size
        job.result.update(frame_count=str(len(track)), duration_s=f"{len(track) / track.fps:.3f}",
                          width=str(width), height=str(height))

    def spec(self, job: Job) -> common_pb2.VideoSpec:
        """The job's VideoSpec as the render service takes it."""
        return job.request.video_spec(self.storage.bucket)

    def _ref(self, key: str) -> common_pb2.ObjectRef:
        return common_pb2.ObjectRef(bucket=self.storage.bucket, key=key)
