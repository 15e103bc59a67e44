"""The Python client for the Likeness gateway: what product backends import.

    from likeness_client import LikenessClient
    with LikenessClient("gateway:50051") as client:  # api_key=, tls_ca= (default: LIKENESS_API_KEY, _TLS_CA_FILE)
        photo = client.upload("me.jpg", kind="photo")
        job_id = client.submit(photo=photo, script="Hello!", resolution=512)
        job = client.wait(job_id, on_progress=lambda job: print(job.progress))
        client.download(job, "hello.mp4")

Needs grpcio and protobuf alone (no server code): the messages and stubs are likeness_client.proto,
generated from protos/ when the package is built.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Optional, Sequence

import grpc

from likeness_client.markers import INTERRUPT, LISTEN, STOP_LISTENING, Interrupt, Listen
from likeness_client.proto.likeness.v1 import common_pb2, expression_pb2, gateway_pb2 as gw, gateway_pb2_grpc

__all__ = ["ASPECTS", "CHUNK", "EMOTIONS", "EXPRESSIVENESS", "FITS", "INTERRUPT", "KINDS", "LISTEN",
           "MAX_MESSAGE_BYTES", "MOTIONS", "RETRY_POLICY", "STOP_LISTENING", "TERMINAL", "TIMED_EMOTIONS",
           "Interrupt", "JobFailedError", "LikenessClient", "Listen", "LiveAudioItem", "LiveSession",
           "LiveTextItem", "timed_emotion", "timed_motion"]

CHUNK = 1024 * 1024
# A gateway restarting (rolling update, reschedule) is unreachable for a few seconds: every call waits
# for the connection (wait_for_ready, within its own timeout; reconnect attempts every <= 2 s), and one
# that the old process dropped with UNAVAILABLE is retried by gRPC (0.5, 1, 2, 4 s). SubmitVideo is safe
# to retry: submit() always sends a client_request_id, so a job already queued is not queued twice.
RETRY_POLICY = json.dumps({"methodConfig": [{
    "name": [{"service": "likeness.v1.GatewayService"}],
    "retryPolicy": {"maxAttempts": 5, "initialBackoff": "0.5s", "maxBackoff": "4s", "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"]}}]})
# The largest message either way: the servers' default (LIKENESS_GRPC_MAX_MESSAGE_BYTES, 64 MiB), far
# above gRPC's own 4 MiB (inline audio, streamed video). A gateway configured otherwise: max_message_bytes=.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def _names(enum: Any, prefix: str) -> dict[str, int]:
    """An API enum's values by name, as the client's options spell them: the enum value's name less its
    prefix, lower case (MOTION_TILT_LEFT: "tilt_left"); the UNSPECIFIED value (0) is not an option."""
    return {name.removeprefix(prefix).lower(): value for name, value in enum.items() if value != 0}


KINDS = _names(gw.AssetKind, "ASSET_KIND_")  # photo, voice_sample, driving_audio, script
EMOTIONS = _names(common_pb2.Emotion, "EMOTION_")  # neutral, happy, sad, angry, surprised, auto
TIMED_EMOTIONS = {name: value for name, value in EMOTIONS.items() if value != common_pb2.EMOTION_AUTO}
MOTIONS = _names(common_pb2.Motion, "MOTION_")  # nod, shake, tilt_left, ..., wink_right
EXPRESSIVENESS = _names(common_pb2.Expressiveness, "EXPRESSIVENESS_")  # low, medium, high
ASPECTS = {name.replace("_", ":"): value  # 1:1, 9:16, 16:9, 4:5
           for name, value in _names(common_pb2.AspectRatio, "ASPECT_RATIO_").items()}
FITS = _names(common_pb2.Fit, "FIT_")  # cover, contain
LiveAudioItem = bytes | expression_pb2.TimedMotion | expression_pb2.TimedEmotion | Interrupt | Listen  # live() audio
LiveTextItem = str | Interrupt | Listen  # live() text: INTERRUPT stops the speech, LISTEN / STOP_LISTENING
TERMINAL = (gw.JOB_STATE_SUCCEEDED, gw.JOB_STATE_FAILED, gw.JOB_STATE_CANCELLED)


class JobFailedError(RuntimeError):
    def __init__(self, job: gw.Job) -> None:
        super().__init__(f"job {job.job_id} {gw.JobState.Name(job.state)}: {job.error.message}")
        self.job = job


class _CallDefaults(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                    grpc.StreamUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):
    """Every call waits for the connection (wait_for_ready) and, with a key, carries
    `authorization: Bearer <key>` (on plaintext channels too, unlike call credentials)."""

    def __init__(self, key: str) -> None:
        self.metadata = [("authorization", f"Bearer {key}")] if key else []

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(details.method, details.timeout, [*(details.metadata or ()), *self.metadata],
                            details.credentials, True, details.compression)

    def intercept_unary_unary(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation, details, request):
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation, details, requests):
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation, details, requests):
        return continuation(self._details(details), requests)


class _CallDetails(NamedTuple("_CallDetails", [("method", str), ("timeout", Optional[float]),
                                               ("metadata", Any), ("credentials", Any),
                                               ("wait_for_ready", Optional[bool]), ("compression", Any)]),
                   grpc.ClientCallDetails):
    pass


class LikenessClient:
    INTERRUPT = INTERRUPT  # a live() item: stop talking now (the user spoke over the avatar)
    LISTEN, STOP_LISTENING = LISTEN, STOP_LISTENING  # live() items: the user started / stopped talking

    def __init__(self, address: str, *, timeout_s: float = 60.0, api_key: str | None = None,
                 tls_ca: str | Path | None = None, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        """api_key / tls_ca (a PEM file of root certificates: the gateway serves TLS) default to
        LIKENESS_API_KEY / LIKENESS_TLS_CA_FILE; empty: none / plaintext. max_message_bytes: the
        largest message sent or received (the gateway's LIKENESS_GRPC_MAX_MESSAGE_BYTES)."""
        # (services/common/config.py registers both variables: their defaults there are these "")
        api_key = os.environ.get("LIKENESS_API_KEY", "") if api_key is None else api_key
        tls_ca = os.environ.get("LIKENESS_TLS_CA_FILE", "") if tls_ca is None else tls_ca
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.enable_retries", 1), ("grpc.service_config", RETRY_POLICY),
                   ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 2000)]
        if tls_ca:
            credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(address, options=options)
        self._raw_channel = self.channel
        self.channel = grpc.intercept_channel(self.channel, _CallDefaults(api_key))
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)
        self.timeout_s = timeout_s

    def close(self) -> None:
        self._raw_channel.close()

    def check_reachable(self, timeout_s: float = 5.0) -> None:
        """Raises ConnectionError when no connection opens within timeout_s: calls wait for the
        gateway (to ride out its restarts), so a wrong address is better caught up front."""
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise ConnectionError(f"cannot reach the gateway within {timeout_s:g} s") from None

    def __enter__(self) -> "LikenessClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def upload(self, source: str | Path | bytes, *, kind: str, filename: str = "",
               content_type: str = "") -> str:
        """Streams a file (or bytes) to the gateway; returns the asset id (its sha256)."""
        return self.upload_object(source, kind=kind, filename=filename, content_type=content_type).asset_id

    def upload_object(self, source: str | Path | bytes, *, kind: str, filename: str = "",
                      content_type: str = "") -> gw.UploadAssetResponse:
        """As upload, returning the stored object too (e.g. for submit(background_image=...))."""
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        header = gw.UploadAssetHeader(kind=KINDS[kind], size_bytes=len(data),
                                      sha256=hashlib.sha256(data).hexdigest(),
                                      filename=filename or ("" if isinstance(source, bytes) else Path(source).name),
                                      content_type=content_type)

        def messages() -> Iterator[gw.UploadAssetRequest]:
            yield gw.UploadAssetRequest(header=header)
            for i in range(0, len(data), CHUNK):
                yield gw.UploadAssetRequest(chunk=data[i:i + CHUNK])

        return self.stub.UploadAsset(messages(), timeout=self.timeout_s)

    def submit(self, **options) -> str:
        """Queues a job (see video_request for the options); returns its id. Without a
        client_request_id one is made up, so that a retried call cannot queue the job twice."""
        if not options.get("client_request_id"):
            options["client_request_id"] = uuid.uuid4().hex
        return self.stub.SubmitVideo(self.video_request(**options), timeout=self.timeout_s).job_id

    def stream(self, *, timeout_s: float = 3600.0, **options) -> Iterator[gw.StreamVideoResponse]:
        """The video live (StreamVideo): a header, then fragmented-MP4 bytes as they are encoded
        (write them out in order: a playable .mp4), then the end with warnings and captions."""
        return self.stub.StreamVideo(gw.StreamVideoRequest(request=self.video_request(**options)), timeout=timeout_s)

    def live(self, audio: Iterable[LiveAudioItem] | None = None, *, sample_rate: int = 0,
             text: Iterable[LiveTextItem] | None = None, photo: str, timeout_s: float = 3600.0,
             **options) -> Iterator[gw.LiveVideoResponse]:
        """A live video (LiveVideo) from `audio`: 16-bit mono PCM at `sample_rate` as it is spoken (a
        microphone, a voice agent; an item may instead be an expression_pb2.TimedMotion ("nod" at 2.5 s)
        or TimedEmotion, sent where it comes, or INTERRUPT: the audio not yet heard is dropped and the
        next audio continues where the speech stopped, or LISTEN / STOP_LISTENING: the user talks, the
        avatar listens), or from `text` as it is written (an LLM's reply, in any pieces),
        spoken by the server a sentence at a time in `voice`, `voice_sample` (an asset id), `speed`,
        `language`; an INTERRUPT item stops the speech at once (the user spoke over the avatar: what
        was not said is dropped, the text after it is the next reply). The responses are stream()'s
        (a header, fragmented-MP4 bytes while the input still arrives, the end; from text, with
        captions), and `interrupted` after an interrupt. `options`: resolution, fps, seed, emotion,
        expressiveness, the framing options of video_request and, from text, auto_motions (emotion
        "auto" and auto_motions read the words: not with audio)."""
        if (audio is None) == (text is None):
            raise ValueError("give audio (with sample_rate) or text")
        base = self.video_request(photo=photo, **options)
        header = gw.LiveVideoHeader(photo=base.photo, video=base.video, emotion=base.emotion,
                                    expressiveness=base.expressiveness, auto_motions=base.auto_motions)
        if audio is not None:
            header.audio_format.CopyFrom(common_pb2.AudioFormat(sample_rate=sample_rate, channels=1,
                                                                encoding=common_pb2.AUDIO_ENCODING_PCM_S16LE))
        else:
            header.speech.CopyFrom(gw.LiveSpeech(voice=base.voice, language=base.language, speed=base.speed))
            if base.HasField("voice_sample"):
                header.speech.voice_sample.CopyFrom(base.voice_sample)
        if base.HasField("seed"):
            header.seed = base.seed

        def requests() -> Iterator[gw.LiveVideoRequest]:
            yield gw.LiveVideoRequest(header=header)
            for item in (audio if audio is not None else text):  # (each goes out where it comes)
                if isinstance(item, Interrupt):
                    yield gw.LiveVideoRequest(interrupt=gw.Interrupt())
                elif isinstance(item, Listen):
                    yield gw.LiveVideoRequest(listening=item.on)
                elif isinstance(item, expression_pb2.TimedMotion):
                    yield gw.LiveVideoRequest(motion=item)
                elif isinstance(item, expression_pb2.TimedEmotion):
                    yield gw.LiveVideoRequest(emotion=item)
                elif audio is not None:
                    yield gw.LiveVideoRequest(audio_chunk=bytes(item))
                else:
                    yield gw.LiveVideoRequest(text=item)
            yield gw.LiveVideoRequest(end_of_audio=expression_pb2.EndOfAudio())

        return self.stub.LiveVideo(requests(), timeout=timeout_s)

    def live_session(self, *, sample_rate: int = 0, photo: str, **options) -> "LiveSession":
        """A live video driven from anywhere in a voice agent (its LLM, its VAD, its TTS callbacks):
        `session.say(text)` (or `send_audio(pcm)` with `sample_rate`), `interrupt()`, `listen()`,
        `end()`; iterate the session for live()'s responses. `options` as for live(), and `keepalive_s`:
        after this long with nothing to send, something that changes nothing is sent (the gateway closes
        a silent stream after LIKENESS_STREAM_IDLE_S)."""
        return LiveSession(self, sample_rate=sample_rate, photo=photo, **options)

    @staticmethod
    def video_request(*, photo: str, script: str = "", resolution: int = 512, fps: float = 25.0,
                      seed: int | None = None, emotion: str = "neutral", expressiveness: str = "medium",
                      export_blendshapes: bool = False, client_request_id: str = "", language: str = "",
                      aspect: str = "1:1", fit: str = "cover", background: str | None = None,
                      background_image: common_pb2.ObjectRef | None = None,
                      keypoints: Sequence[tuple[float, float]] | None = None,
                      face_at: tuple[float, float] | None = None,
                      voice_sample: str | None = None, driving_audio: str | None = None, voice: str = "",
                      speed: float = 1.0, burn_captions: bool = False, auto_motions: bool = False,
                      emotions: Sequence[tuple[float, str, float]] = (),
                      motions: Sequence[tuple[float, str, float]] = (),
                      webhook_url: str = "") -> gw.SubmitVideoRequest:
        """aspect 1:1/9:16/16:9/4:5; fit cover/contain; background '#RRGGBB' or 'transparent' (the
        video is then VP9 WebM with alpha), or background_image = upload_object(...).object;
        keypoints: 5 (x, y) photo pixels for faces no detector finds (see services.render.keypoints);
        face_at: (x, y) photo pixels of the face to animate in a photo of several people (default: the largest).
        Speech: `script`, spoken in the voice of the `voice_sample` asset if given, or instead the
        `driving_audio` asset (a recording to lip-sync to; `script` is then its optional transcript);
        asset ids come from upload(). `voice`: a built-in voice (voices()); "": the default; `speed`:
        speaking rate of the script (0.5-2.0); `burn_captions`: draw the captions into the video;
        `auto_motions`: nod on yes, shake on no, tilt on questions (no tags needed); `emotions`, `motions`:
        time-coded (seconds, name, strength), e.g. (2.5, "nod", 1.0), on top of the script's tags;
        `webhook_url`: where the gateway POSTs the final job (services.gateway.webhooks)."""
        video = common_pb2.VideoSpec(resolution=resolution, fps=fps, aspect_ratio=ASPECTS[aspect],
                                     fit=FITS[fit], burn_in_captions=burn_captions)
        if background == "transparent":
            video.background.transparent = True
        elif background:
            video.background.color = background
        elif background_image is not None:
            video.background.image.CopyFrom(background_image)
        for x, y in keypoints or ():
            video.keypoints.points.add(x=float(x), y=float(y))
        if face_at is not None:
            video.face_at.x, video.face_at.y = map(float, face_at)
        request = gw.SubmitVideoRequest(
            client_request_id=client_request_id, photo=gw.AssetSource(asset_id=photo),
            video=video, emotion=EMOTIONS[emotion],
            expressiveness=EXPRESSIVENESS[expressiveness], export_blendshapes=export_blendshapes,
            language=language, voice=voice, speed=0.0 if speed == 1.0 else speed, webhook_url=webhook_url,
            auto_motions=auto_motions)
        if seed is not None:
            request.seed = seed
        request.emotions.extend(timed_emotion(*emotion) for emotion in emotions)
        request.motions.extend(timed_motion(*motion) for motion in motions)
        if driving_audio is not None:
            request.driving_audio.asset_id = driving_audio
            request.transcript = script or ""  # optional: exact lip timing by forced alignment
        else:
            request.script = script
        if voice_sample is not None:
            request.voice_sample.asset_id = voice_sample
        return request

    def voices(self) -> list[gw.VoiceInfo]:
        return list(self.stub.ListVoices(gw.ListVoicesRequest(), timeout=self.timeout_s).voices)

    def get(self, job_id: str) -> gw.Job:
        return self.stub.GetJob(gw.GetJobRequest(job_id=job_id), timeout=self.timeout_s).job

    def cancel(self, job_id: str) -> gw.Job:
        return self.stub.CancelJob(gw.CancelJobRequest(job_id=job_id), timeout=self.timeout_s).job

    def jobs(self, *states: int, page_size: int = 100) -> Iterator[gw.Job]:
        """The caller's jobs, newest first, page by page (all states unless some are named, e.g.
        gw.JOB_STATE_RUNNING); any gateway replica lists every replica's jobs."""
        token = ""
        while True:
            reply = self.stub.ListJobs(gw.ListJobsRequest(states=list(states), page_size=page_size, page_token=token),
                                       timeout=self.timeout_s)
            yield from reply.jobs
            if not reply.next_page_token:
                return
            token = reply.next_page_token

    def retry(self, job_id: str, client_request_id: str = "") -> str:
        """Runs a failed or cancelled job again: returns the id of a new job that starts from the
        stages the old one finished (follow it with wait()). Idempotent like submit()."""
        request = gw.RetryJobRequest(job_id=job_id, client_request_id=client_request_id or uuid.uuid4().hex)
        return self.stub.RetryJob(request, timeout=self.timeout_s).job.job_id

    def watch(self, job_id: str, *, timeout_s: float = 3600.0) -> Iterator[gw.WatchJobResponse]:
        yield from self.stub.WatchJob(gw.WatchJobRequest(job_id=job_id), timeout=timeout_s)

    def wait(self, job_id: str, *, timeout_s: float = 3600.0,
             on_progress: Callable[[gw.WatchJobResponse], None] = lambda event: None) -> gw.Job:
        """Follows the job to its end; raises JobFailedError unless it succeeded. A watch cut short
        (a gateway restarting, a recycled connection) is opened again until the job ends or
        timeout_s passes (then DEADLINE_EXCEEDED)."""
        deadline = time.monotonic() + timeout_s
        pause = 0.5
        while True:
            left = deadline - time.monotonic()
            try:
                for event in self.watch(job_id, timeout_s=max(left, 0.001)):
                    on_progress(event)
                    if event.job.state in TERMINAL:
                        return _finished(event.job)
                job = self.get(job_id)  # the watch ended early: where is the job now?
                if job.state in TERMINAL:
                    return _finished(job)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() + pause >= deadline:
                    raise
                time.sleep(pause)  # (gRPC's own retries are spent: the gateway is still starting)
                pause = min(2 * pause, 8.0)

    def delete_job(self, job_id: str) -> list[str]:
        """Deletes a finished job and everything it stored; returns the removed object keys."""
        return list(self.stub.DeleteJob(gw.DeleteJobRequest(job_id=job_id), timeout=self.timeout_s).deleted_keys)

    def delete_asset(self, asset_id: str) -> list[str]:
        """Deletes an uploaded asset and what was derived from it (rigs, voice profiles)."""
        return list(self.stub.DeleteAsset(gw.DeleteAssetRequest(asset_id=asset_id), timeout=self.timeout_s).deleted_keys)

    @staticmethod
    def download(job: gw.Job, path: str | Path) -> Path:
        """Fetches the video through its presigned URL (valid for a short time)."""
        return _fetch(job.result.presigned_url, path)

    @staticmethod
    def download_poster(job: gw.Job, path: str | Path) -> Path:
        """Fetches the video's poster (JPEG, or PNG for a transparent video) through its presigned URL."""
        return _fetch(job.result.poster_url, path)


def timed_emotion(time_code: float, emotion: str, strength: float = 1.0) -> expression_pb2.TimedEmotion:
    """An emotion from `time_code` seconds on (a live() item, or video_request's `emotions`)."""
    return expression_pb2.TimedEmotion(time_code=time_code, emotion=TIMED_EMOTIONS[emotion], strength=strength)


def timed_motion(time_code: float, motion: str, strength: float = 1.0) -> expression_pb2.TimedMotion:
    """A motion ("nod", "tilt_left", ...: MOTIONS) at `time_code` seconds (a live() item, or video_request's
    `motions`)."""
    return expression_pb2.TimedMotion(time_code=time_code, motion=MOTIONS[motion], strength=strength)


def _finished(job: gw.Job) -> gw.Job:
    if job.state != gw.JOB_STATE_SUCCEEDED:
        raise JobFailedError(job)
    return job


def _fetch(url: str, path: str | Path) -> Path:
    target = Path(path)
    with urllib.request.urlopen(url, timeout=120) as response:
        target.write_bytes(response.read())
    return target


class LiveSession:
    """LikenessClient.live() fed from a queue, so that any thread can add to it as things happen:

        with client.live_session(photo=asset, voice="kokoro-female") as session:
            threading.Thread(target=play, args=(session,)).start()   # for message in session: ...
            session.say("Hello! ")             # an LLM's reply, in any pieces
            session.interrupt()                # the user spoke over the avatar (VAD)
            session.listen()                   # ... and is talking: the avatar listens
            session.say("Sorry, go on. ")      # the next reply
        # leaving the block ends it (end_of_audio); cancel() hangs up at once
    """

    def __init__(self, client: LikenessClient, *, sample_rate: int = 0, photo: str, keepalive_s: float = 10.0,
                 **options) -> None:
        import queue

        self._items: queue.Queue = queue.Queue()
        self._ended = False
        # The gateway closes a live stream whose caller sends nothing for LIKENESS_STREAM_IDLE_S (30 s by
        # default); a voice agent's user may talk longer than that. After `keepalive_s` of nothing to send,
        # the session sends what changes nothing: an empty text, or 10 ms of silence (0: never).
        keepalive = b"\0\0" * (sample_rate // 100) if sample_rate > 0 else ""

        def items() -> Iterator:
            while True:
                try:
                    item = self._items.get(timeout=keepalive_s) if keepalive_s > 0 else self._items.get()
                except queue.Empty:
                    item = keepalive
                if item is None:
                    return
                yield item

        self.audio = sample_rate > 0
        self._call = (client.live(items(), sample_rate=sample_rate, photo=photo, **options) if self.audio
                      else client.live(text=items(), photo=photo, **options))

    def say(self, text: str) -> None:
        self._put(text, text=True)

    def send_audio(self, pcm: bytes) -> None:
        """16-bit mono PCM at the session's sample rate, as it is spoken or synthesized."""
        self._put(bytes(pcm), text=False)

    def interrupt(self) -> None:
        self._put(INTERRUPT)

    def listen(self, on: bool = True) -> None:
        self._put(LISTEN if on else STOP_LISTENING)

    def end(self) -> None:
        """No more input: what is still open is spoken, then the stream ends (its `end` message)."""
        if not self._ended:
            self._ended = True
            self._items.put(None)

    def cancel(self) -> None:
        self.end()
        self._call.cancel()

    def __iter__(self) -> Iterator[gw.LiveVideoResponse]:
        return iter(self._call)

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.end()

    def _put(self, item, text: bool | None = None) -> None:
        if self._ended:
            raise RuntimeError("the session has ended")
        if text is not None and text == self.audio:
            raise ValueError("this session sends " + ("audio: use send_audio()" if self.audio else "text: use say()"))
        self._items.put(item)
