"""GatewayService: the public API. Thin: validation and conversion here, work in jobs/runner."""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import status_pb2
from grpc_status import rpc_status

from services.common import config

from services.common.infra import grpc_errors, wire
from services.common.domain.errors import InputError, NotFound
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw, gateway_pb2_grpc
from services.common.infra.storage import Storage
from services.gateway import assets, auth, retention, webhooks
from services.gateway.db import Database
from services.gateway.jobs import (Job, JobActive, JobFailed, JobManager, JobState, QueueFull, RequestMismatch,
                                   parse_page_token)
from services.gateway.live import run_live
from services.gateway.metrics import FIRST_MEDIA, IN_FLIGHT, JOBS, QUEUE_DEPTH, STREAMS, STREAMS_IN_FLIGHT
from services.gateway.runner import Downstream, JobRunner
from services.pipeline.request import LIVE_AUDIO, VideoRequest, from_live_pb, from_submit_pb
from services.tts import DEFAULT_VOICE, VOICES

log = logging.getLogger(__name__)
URL_TTL = timedelta(seconds=config.get_int("LIKENESS_RESULT_URL_TTL_S"))
STAGES = {"tts": gw.STAGE_TTS, "expression": gw.STAGE_EXPRESSION, "render": gw.STAGE_RENDER}
STATES = {s: getattr(gw, f"JOB_STATE_{s.value}") for s in JobState}


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(self, storage: Storage, manager: JobManager, runner: JobRunner | None = None, *,
                 scoped: bool = False) -> None:
        self.storage = storage
        self.manager = manager  # every replica's jobs, in PostgreSQL
        self.runner = runner  # for StreamVideo (jobs reach it through the manager)
        self.scoped = scoped  # API keys on: each principal sees only its own jobs and uploads
        self.max_streams = config.get_int("LIKENESS_MAX_STREAMS")
        self._streams = threading.BoundedSemaphore(self.max_streams)
        self._streaming: dict[str, dict] = {}  # live streams' requests (DeleteAsset spares their assets)
        self.eraser = retention.Eraser(storage, manager, lambda: list(self._streaming.values()))

    # -- assets ----------------------------------------------------------------------------------

    def store_upload(self, header: gw.UploadAssetHeader, data: bytes) -> gw.UploadAssetResponse:
        """An upload's bytes, received whole (services/gateway/aio.py reads the stream): checked
        against its header and stored."""
        sha = hashlib.sha256(data).hexdigest()
        if len(data) != header.size_bytes:
            raise InputError("header.size_bytes", f"declared {header.size_bytes} bytes, received {len(data)}")
        if sha != header.sha256.lower():
            raise InputError("header.sha256", f"declared {header.sha256[:64]}, received content hashes to {sha}")
        assets.check_content(header.kind, data)
        key = assets.asset_key(sha)
        # With API keys on, "existing" says whether the caller had it, not whether anyone had.
        claim = assets.owner_key(sha, auth.current_principal()) if self.scoped else None
        existing = self.storage.exists(claim or key)
        # Written again even when stored: an upload's age (LIKENESS_RETENTION_DAYS) counts from the latest.
        info = self.storage.put_bytes(key, data, header.content_type or "application/octet-stream")
        if claim:
            self.storage.put_bytes(claim, b"", "text/plain")
        return gw.UploadAssetResponse(asset_id=sha, existing=existing, object=common_pb2.ObjectRef(
            bucket=info.bucket, key=info.key, sha256=sha, size_bytes=info.size, content_type=info.content_type))

    def _asset(self, source: gw.AssetSource, field: str) -> str:
        which = source.WhichOneof("source")
        if which is None:
            raise InputError(field, "is required (asset_id or object)")
        if which == "asset_id":
            key = assets.asset_key(source.asset_id)
        else:
            if source.object.bucket and source.object.bucket != self.storage.bucket:
                raise InputError(f"{field}.object.bucket", f"must be {self.storage.bucket!r}")
            key = assets.check_key(source.object.key, f"{field}.object.key")
        if not self.storage.exists(key) or (self.scoped and not self._owns(key)):
            raise InputError(field, "asset not found; upload it first")  # (whose key it is is not said)
        return key

    def _owns(self, key: str) -> bool:
        """Whether the caller uploaded this asset (with API keys on, only such keys may be used)."""
        asset_id = key.removeprefix("assets/")
        return (key.startswith("assets/") and assets.ASSET_ID.match(asset_id) is not None
                and self.storage.exists(assets.owner_key(asset_id, auth.current_principal())))

    # -- jobs ------------------------------------------------------------------------------------

    def SubmitVideo(self, request: gw.SubmitVideoRequest, context):
        job_request = self._validate(request)
        fingerprint = hashlib.sha256(request.SerializeToString(deterministic=True)).hexdigest()
        try:
            job, existing = self.manager.submit(job_request, request.client_request_id, auth.current_principal(),
                                                fingerprint=fingerprint)
        except QueueFull as exc:
            grpc_errors.resource_exhausted(context, str(exc), retry_after_s=5.0, subject=exc.subject)
        except RequestMismatch as exc:
            _already_exists(context, exc)
        return gw.SubmitVideoResponse(job_id=job.job_id, existing=existing)

    def StreamVideo(self, stream_request: gw.StreamVideoRequest, context):
        request = stream_request.request
        job_request = self._validate(request)
        if job_request.frame.alpha:
            raise InputError("video.background", "a transparent video is not streamed (MP4 has no alpha); "
                                                 "submit a job for WebM with alpha")
        if request.webhook_url:
            raise InputError("webhook_url", "goes with SubmitVideo; a stream reports on its own connection")
        job = Job(job_id=uuid.uuid4().hex, request=job_request)
        yield from self._streamed(job, lambda: self.runner.stream(job), context, kind="stream")

    def LiveVideo(self, request_iterator, context):
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise InputError("header", "the first message must be the header")
        live_request, mode = self._validate_live(first.header)
        job = Job(job_id=uuid.uuid4().hex, request=live_request)
        audio_format = first.header.audio_format if mode == LIVE_AUDIO else None
        yield from self._streamed(job, lambda: run_live(self.runner, job, audio_format, request_iterator),
                                  context, response=gw.LiveVideoResponse, kind=mode)

    def _streamed(self, job: Job, events: Callable[[], Iterator[tuple[str, object]]], context,
                  response=gw.StreamVideoResponse, kind: str = "stream"):
        """StreamVideo's responses from a runner's events ("timed"/"ready", then "media"; LiveVideo's
        "interrupted" too), in one of the
        LIKENESS_MAX_STREAMS slots (RESOURCE_EXHAUSTED when none is free) held until the end; counted
        by `kind` in the likeness_stream* metrics."""
        started = time.monotonic()
        if self.runner is None or not self._streams.acquire(blocking=False):
            STREAMS.labels(kind, "refused").inc()
            grpc_errors.resource_exhausted(context, f"{self.max_streams} streams are running (limit); retry later",
                                           retry_after_s=2.0, subject="streams")
        self._streaming[job.job_id] = job.request
        STREAMS_IN_FLIGHT.labels(kind).inc()
        outcome, first_media = "failed", True
        try:
            width, height = job.request.frame.frame_size
            for event, value in events():
                if event in ("timed", "ready"):
                    value = value or {"frame_count": 0, "duration_s": 0.0}  # live: not known in advance
                    yield response(header=gw.StreamVideoHeader(
                        content_type="video/mp4", frame_size=common_pb2.FrameSize(width=width, height=height),
                        fps=job.request.fps, frame_count=value["frame_count"],
                        duration_seconds=value["duration_s"], seed=job.request.seed))
                elif event == "interrupted":
                    yield response(interrupted=value)
                else:
                    if first_media:
                        FIRST_MEDIA.labels(kind).observe(time.monotonic() - started)
                        first_media = False
                    yield response(media=value)
            end = gw.StreamVideoEnd(warnings=job.warnings)
            if "captions_vtt" in job.result:
                end.captions.webvtt, end.captions.srt = job.result["captions_vtt"], job.result["captions_srt"]
            outcome = "ok"
            yield response(end=end)
        except BaseException as exc:
            # A caller who hung up shows as GeneratorExit, or as the calls it fed breaking off.
            invalid = isinstance(exc, InputError) or (isinstance(exc, JobFailed) and exc.code == "INVALID_ARGUMENT")
            outcome = ("cancelled" if isinstance(exc, GeneratorExit) or not context.is_active()
                       else "invalid" if invalid else "failed")
            if not isinstance(exc, JobFailed):
                raise
            if invalid and exc.field:
                raise InputError(exc.field, str(exc)) from None
            context.abort(getattr(grpc.StatusCode, exc.code, grpc.StatusCode.INTERNAL), str(exc))
        finally:
            STREAMS.labels(kind, outcome).inc()
            STREAMS_IN_FLIGHT.labels(kind).dec()
            self._streaming.pop(job.job_id, None)
            self._streams.release()

    def GetJob(self, request, context):
        return gw.GetJobResponse(job=self._job_pb(self._get(request.job_id)))

    def CancelJob(self, request, context):
        self._get(request.job_id)
        try:  # (whichever replica runs it is told by the database's notification)
            return gw.CancelJobResponse(job=self._job_pb(self.manager.cancel(request.job_id)))
        except KeyError:  # deleted meanwhile
            raise NotFound(f"no job {request.job_id!r}") from None

    def RetryJob(self, request, context):
        old = self._get(request.job_id)  # (NOT_FOUND for another principal's job)
        if old.state not in (JobState.FAILED, JobState.CANCELLED):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job {old.job_id} is {old.state.value.lower()}: "
                                                               "only a failed or cancelled job is retried")
        try:  # (an operator's retry stays the owner's job)
            job, existing = self.manager.submit(old.request, request.client_request_id, old.owner,
                                                retry_of=old.job_id, prepare=lambda new: self._carry_over(old, new),
                                                fingerprint=hashlib.sha256(f"retry {old.job_id}".encode()).hexdigest())
        except QueueFull as exc:
            grpc_errors.resource_exhausted(context, str(exc), retry_after_s=5.0, subject=exc.subject)
        except RequestMismatch as exc:
            _already_exists(context, exc)
        return gw.RetryJobResponse(job=self._job_pb(job), existing=existing)

    def _carry_over(self, old: Job, new: Job) -> None:
        """What the old job stored (speech, tracks, a finished video), copied under the new one: its
        runner skips those stages."""
        copied: list[str] = []
        try:
            for key in self.storage.list(f"jobs/{old.job_id}/"):
                copied.append(f"jobs/{new.job_id}/" + key.removeprefix(f"jobs/{old.job_id}/"))
                self.storage.copy(key, copied[-1])
        except Exception:  # no job is made: leave no objects of one behind
            for key in copied:
                try:
                    self.storage.delete(key)
                except Exception:  # noqa: BLE001 - the storage is down: nothing more to do here
                    break
            raise

    def DeleteJob(self, request, context):
        try:
            keys = self.eraser.delete_job(self._get(request.job_id))
        except JobActive as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return gw.DeleteJobResponse(deleted_keys=keys)

    def DeleteAsset(self, request, context):
        try:
            keys = self.eraser.delete_asset(request.asset_id, self._caller())
        except retention.InUse as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return gw.DeleteAssetResponse(deleted_keys=keys)

    def ListJobs(self, request, context):
        if request.page_size < 0:
            raise InputError("page_size", "must be >= 0")
        if request.page_token:
            try:
                parse_page_token(request.page_token)
            except ValueError:
                raise InputError("page_token", "use next_page_token from the previous page") from None
        states = {s for s, v in STATES.items() if v in set(request.states)}
        jobs, token = self.manager.list(states=states or None, owner=self._caller(),
                                        page_size=min(request.page_size or 50, 500), page_token=request.page_token)
        return gw.ListJobsResponse(jobs=[self._job_pb(j) for j in jobs], next_page_token=token)

    def ListVoices(self, request, context):
        return gw.ListVoicesResponse(voices=[
            gw.VoiceInfo(name=v.name, gender=v.gender, engine=v.engine, description=v.description,
                         is_default=v.name == DEFAULT_VOICE) for v in VOICES.values()])

    # -- helpers ---------------------------------------------------------------------------------

    def _get(self, job_id: str) -> Job:
        job = None
        if _valid_id(job_id):  # (anything else is no job)
            try:
                job = self.manager.get(job_id)
            except KeyError:
                pass
        if job is None or self._caller() not in (None, job.owner):
            raise NotFound(f"no job {job_id[:64]!r}")  # another principal's job: as if there were none
        return job

    def _caller(self) -> str | None:
        """Whose jobs and uploads the caller manages: its own with API keys on, everyone's (None)
        without them or for an operator."""
        principal = auth.current_principal()
        return None if not self.scoped or auth.is_admin(principal) else principal

    def _gauges(self) -> None:
        counts = self.manager.counts()  # every replica's: the HPA scales on the global backlog
        QUEUE_DEPTH.set(counts["QUEUED"])
        IN_FLIGHT.set(counts["RUNNING"])

    def _validate(self, r: gw.SubmitVideoRequest) -> VideoRequest:
        """The request (services.pipeline.request: parsed and checked there), and what only the gateway
        checks: the envelope. One BadRequest with every violation."""
        request, violations = from_submit_pb(r, self._asset, self._script_text)
        if len(r.client_request_id) > 128:
            violations.append(("client_request_id", "at most 128 characters"))
        webhook_url = ""
        if r.webhook_url:
            try:
                webhook_url = webhooks.check_url(r.webhook_url)
            except InputError as exc:
                violations.append((exc.field, exc.message))
        if violations:
            raise InputError.many(violations)
        return replace(request, webhook_url=webhook_url)

    def _script_text(self, key: str) -> str:
        try:
            return self.storage.get_bytes(key).decode("utf-8", errors="strict")
        except UnicodeDecodeError:
            raise InputError("script_asset", "is not UTF-8 text") from None

    def _validate_live(self, h: gw.LiveVideoHeader) -> tuple[VideoRequest, str]:
        """LiveVideo's header, every violation at once (as SubmitVideo's); (the request, its mode)."""
        request, violations, mode = from_live_pb(h, self._asset)
        if violations:
            raise InputError.many(violations)
        return request, mode

    def _job_pb(self, job: Job) -> gw.Job:
        message = gw.Job(job_id=job.job_id, state=STATES[job.state],
                         stage=STAGES.get(job.stage, gw.STAGE_UNSPECIFIED), progress=self._progress(job),
                         create_time=_ts(job.created_at), update_time=_ts(job.updated_at),
                         warnings=job.warnings, client_request_id=job.client_request_id,
                         seed=job.request.seed, owner=job.owner, retry_of=job.retry_of)
        for stage, key in job.stage_outputs.items():
            message.stage_outputs.add(stage=STAGES.get(stage, gw.STAGE_UNSPECIFIED), name=stage,
                                      object=common_pb2.ObjectRef(bucket=self.storage.bucket, key=key))
        if job.state is JobState.FAILED:
            code = getattr(grpc.StatusCode, job.error_code or "INTERNAL", grpc.StatusCode.INTERNAL)
            message.error.CopyFrom(grpc_errors.error_status(
                code, job.message, [(job.error_field, job.message)] if job.error_field else []))
        if job.request.webhook_url:
            delivery = {"state": webhooks.PENDING, "attempts": 0, "http_status": 0, "error": "", **job.webhook}
            message.webhook.CopyFrom(gw.WebhookDelivery(
                url=job.request.webhook_url, state=getattr(gw, f"WEBHOOK_STATE_{delivery['state']}"),
                attempts=delivery["attempts"], http_status=delivery["http_status"], error=delivery["error"]))
        if job.state is JobState.SUCCEEDED and "video_key" in job.result:
            video = self.storage.stat(job.result["video_key"])
            expires = Timestamp()
            expires.FromSeconds(int(time.time() + URL_TTL.total_seconds()))
            message.result.video.CopyFrom(wire.object_ref(video))
            message.result.presigned_url = self.storage.presigned_get_url(video.key, URL_TTL)
            if "poster_key" in job.result:
                poster = self.storage.stat(job.result["poster_key"])
                message.result.poster.CopyFrom(wire.object_ref(poster))
                message.result.poster_url = self.storage.presigned_get_url(poster.key, URL_TTL)
            message.result.url_expires_at.CopyFrom(expires)
            message.result.fps = job.request.fps
            message.result.duration_seconds = float(job.result.get("duration_s", 0.0))
            message.result.frame_size.width = int(job.result["width"])
            message.result.frame_size.height = int(job.result["height"])
            if "blendshapes_key" in job.result:
                message.result.blendshapes.CopyFrom(common_pb2.ObjectRef(
                    bucket=self.storage.bucket, key=job.result["blendshapes_key"], content_type="application/json"))
            if "captions_vtt" in job.result:
                message.result.captions.webvtt = job.result["captions_vtt"]
                message.result.captions.srt = job.result.get("captions_srt", "")
        return message

    def job_json(self, job: Job) -> bytes:
        """A webhook's body: the Job as GetJob returns it, without its own delivery state."""
        message = self._job_pb(job)
        message.ClearField("webhook")
        return json_format.MessageToJson(message).encode()

    @staticmethod
    def _progress(job: Job) -> float:
        """Overall progress: tts 10%, expression 5%, render 85% of the work."""
        if job.state is JobState.SUCCEEDED:
            return 1.0
        weights = {"tts": (0.0, 0.10), "expression": (0.10, 0.05), "render": (0.15, 0.85)}
        start, share = weights.get(job.stage, (0.0, 0.0))
        return start + share * job.progress


def _already_exists(context, exc: RequestMismatch) -> None:
    """ALREADY_EXISTS naming client_request_id (BadRequest details), as AIP-155 asks."""
    status = grpc_errors.error_status(grpc.StatusCode.ALREADY_EXISTS, str(exc), [("client_request_id", str(exc))])
    context.abort_with_status(rpc_status.to_status(status_pb2.Status.FromString(status.SerializeToString())))


def _valid_id(job_id: str) -> bool:
    """Job ids are uuid4 hex: anything else is no job, and must not become an object key."""
    return len(job_id) == 32 and all(c in "0123456789abcdef" for c in job_id)


def _ts(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def per_principal_limit() -> int:
    """LIKENESS_MAX_JOBS_PER_PRINCIPAL, its default (-1) a fair share: a quarter of the queue, so one
    tenant cannot fill it for all."""
    limit = config.get_int("LIKENESS_MAX_JOBS_PER_PRINCIPAL")
    return max(1, config.get_int("LIKENESS_MAX_QUEUED_JOBS") // 4) if limit < 0 else limit


def build() -> tuple[GatewayServicer, Callable[[], None]]:
    """The gateway's parts from the environment: the servicer (with its job manager, webhook sender
    and retention sweeper running) and the function that stops them. Served by services/gateway/aio.py."""
    storage = Storage.from_env()
    storage.ensure_bucket()
    db = Database(config.get_str("LIKENESS_DATABASE_URL"), max_size=config.get_int("LIKENESS_DATABASE_POOL_SIZE"))
    db.migrate()  # (replicas starting at once apply each migration once)

    def finished(job: Job, seconds: float) -> None:
        JOBS.labels(job.state.value.lower()).inc()

    runner = JobRunner(storage, Downstream.from_env())
    manager = JobManager(runner, db,
                         max_concurrent=config.get_int("LIKENESS_MAX_CONCURRENT_JOBS"),
                         max_queued=config.get_int("LIKENESS_MAX_QUEUED_JOBS"),
                         max_active_per_owner=per_principal_limit(),
                         on_finish=finished,
                         progress_save_interval_s=config.get_float("LIKENESS_JOB_SAVE_INTERVAL_S"),
                         lease_s=config.get_float("LIKENESS_JOB_LEASE_S"), request_type=VideoRequest)
    log.info("gateway replica %s (the holder its running jobs name)", manager.instance_id)
    scoped = bool(config.get_str("LIKENESS_API_KEYS_FILE"))
    servicer = GatewayServicer(storage, manager, runner, scoped=scoped)
    sender = webhooks.WebhookSender(manager, servicer.job_json)
    retention.start_sweeper(servicer.eraser, config.get_float("LIKENESS_RETENTION_DAYS"))

    def refresh_gauges() -> None:  # gauges also move when jobs finish, not only on calls
        while True:
            try:
                servicer._gauges()
            except Exception:  # noqa: BLE001 - the database restarting
                pass
            time.sleep(1.0)

    threading.Thread(target=refresh_gauges, name="gauges", daemon=True).start()

    def stop() -> None:
        sender.close()
        manager.close()  # the jobs it ran: another replica resumes them now, not after LIKENESS_JOB_LEASE_S

    return servicer, stop


if __name__ == "__main__":
    from services.gateway.aio import main  # (the async front imports this module)

    main()
