"""The gateway's WebRTC front: a live avatar from text, played in a browser (docs/live.md#webrtc).

An HTTP server (aiohttp, in the gateway's asyncio loop, on LIKENESS_WEBRTC_PORT at LIKENESS_BIND_HOST)
beside the gRPC port:

- POST /v1/live (application/sdp offer; the photo and voice in the query) -> 201 with the answer SDP
  and a Location to DELETE (WHEP's shape). The session is a LiveVideo with speech, run by the same
  servicer method (GatewayServicer.LiveVideo: the header parsed by from_live_pb, a LIKENESS_MAX_STREAMS
  slot, run_live's three calls); its text, interrupts and listening come over the data channel.
- POST /v1/assets?kind=photo (the photo's bytes) -> the asset id, as UploadAsset.
- GET / -> a plain page that does all of it.

The pipeline's output is the render service's fragmented MP4, made in another process; it is decoded
here (PyAV) and the frames and PCM wait in a Playout, which aiortc's tracks read at the wall clock's
pace. The viewer has no buffer of its own beyond the jitter buffer, so an interrupt takes effect here:
what was not yet sent is silenced and the face holds still until the timeline reaches where the
pipeline cut the speech.
"""
from __future__ import annotations

import asyncio
import contextvars
import fractions
import io
import ipaddress
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from services.common import config
from services.common.domain.errors import InputError
from likeness_client.proto.likeness.v1 import expression_pb2 as ex, gateway_pb2 as gw
from services.gateway import assets, auth
from services.gateway.aio import AsyncGateway, _Abort, _Raises

log = logging.getLogger(__name__)
PAGE = Path(__file__).with_name("webrtc_page.html")
AUDIO_RATE, AUDIO_PTIME = 48000, 0.02
AUDIO_SAMPLES = int(AUDIO_RATE * AUDIO_PTIME)
MAX_SDP_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 16 * 1024  # a data channel message: an LLM's text arrives in pieces far smaller
CONNECT_TIMEOUT_S = 15.0  # a peer that never completes ICE + DTLS after its answer is let go
DISCONNECTED_GRACE_S = 3.0  # ICE "disconnected" may recover (a lost packet burst); past this, it is gone
UNMASK_AFTER_S = 5.0  # an interrupt the pipeline never answers (nothing was speaking) unmasks anyway
QUERY_FIELDS = ("photo", "voice", "language", "speed", "seed")
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAUTHENTICATED": 401,
               "PERMISSION_DENIED": 403, "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "FAILED_PRECONDITION": 409}
_END = object()
SIMPLE_TYPES = ("text/plain", "multipart/form-data", "application/x-www-form-urlencoded")


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, _one_line(message), headers or {}


def _one_line(text: str, limit: int = 300) -> str:
    """A message for the caller: one line, bounded (it may quote what the caller sent)."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _http_error(exc: BaseException) -> HttpError:
    """An error of the servicer (InputError, the aborts of grpc_errors' helpers) as an HTTP status."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, InputError):
        return HttpError(400, "; ".join(f"{f}: {m}" for f, m in exc.violations))
    _code, abort = AsyncGateway._status_of(exc)
    if not isinstance(abort, _Abort):
        return HttpError(500, "internal error (see the gateway's log)")
    status = HTTP_STATUS.get(abort.code.name, 500)
    if status == 503:  # (a downstream failure's details name internal addresses: the log has them)
        log.warning("webrtc front: %s", abort.details)
        return HttpError(503, "a service the live video needs is unavailable; retry later", {"Retry-After": "5"})
    if status >= 500:
        log.error("webrtc front: %s %s", abort.code.name, abort.details)
        return HttpError(status, "internal error (see the gateway's log)")
    return HttpError(status, abort.details, {"Retry-After": "2"} if status == 429 else {})


# -- ICE on the bound address alone ------------------------------------------------------------------

def _restrict_ice(host: str) -> None:
    """Media (ICE) on LIKENESS_BIND_HOST like every other port: aioice gathers on every interface but
    loopback by default, so for a specific address it is told that one alone (process-wide: a gateway
    has one bind address). On loopback, datagrams from elsewhere are ignored too (a browser on the same
    machine also sends checks from its other interfaces' sockets; answering them would leave 127.0.0.1)."""
    import aioice.ice

    # RFC 7675 consent checks every second, 4 missed: a peer that vanished (no DTLS close: a crash, a
    # lost network) frees its place in ~5 s instead of aioice's 30.
    aioice.ice.CONSENT_INTERVAL, aioice.ice.CONSENT_FAILURES = 1, 4
    if host in ("0.0.0.0", "::", ""):
        return
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [host]
    if ipaddress.ip_address(host).is_loopback and not getattr(aioice.ice.StunProtocol, "_loopback_only", False):
        received = aioice.ice.StunProtocol.datagram_received

        def datagram_received(self, data, addr):
            if ipaddress.ip_address(addr[0]).is_loopback:
                received(self, data, addr)

        aioice.ice.StunProtocol.datagram_received = datagram_received
        aioice.ice.StunProtocol._loopback_only = True


def _reachable_candidates(sdp: str, host: str) -> str:
    """The offer without candidates a loopback-bound gateway cannot reach (the browser's other interfaces)."""
    if host in ("0.0.0.0", "::", "") or not ipaddress.ip_address(host).is_loopback:
        return sdp
    kept = []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            parts = line.split()
            if len(parts) > 4 and parts[4] != host:
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n"


def ice_servers() -> list:
    """LIKENESS_WEBRTC_ICE_SERVERS as aiortc's RTCIceServer list (turn:user:password@host:port)."""
    from aiortc import RTCIceServer

    servers = []
    for url in filter(None, (u.strip() for u in config.get_str("LIKENESS_WEBRTC_ICE_SERVERS").split(","))):
        scheme, _, rest = url.partition(":")
        if scheme not in ("stun", "stuns", "turn", "turns"):
            raise config.ConfigError(f"LIKENESS_WEBRTC_ICE_SERVERS: {scheme!r} is not stun/turn")
        credentials, at, address = rest.rpartition("@")
        if at:
            user, _, password = credentials.partition(":")
            servers.append(RTCIceServer(urls=f"{scheme}:{address}", username=user, credential=password))
        else:
            servers.append(RTCIceServer(urls=url))
    return servers


# -- the media: decoded here, played at the wall clock's pace ---------------------------------------

class Playout:
    """Decoded frames and 48 kHz PCM on the video's timeline, handed to the tracks as the clock goes.
    The audio is the clock: `position` (the timeline's next sample) advances as audio is sent, and
    only when there is audio to send (the pipeline late: silence, and the clock waits, the face
    with it). An interrupt silences the timeline from the position it is at until where the pipeline
    cut the speech, and the face holds the frame it showed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pcm = np.zeros(0, np.int16)
        self._pcm_start: float | None = None  # the timeline position of _pcm[0]
        self._frames: deque[tuple[float, Any]] = deque()
        self.position = 0.0
        self.shown: Any = None
        self._mask: tuple[float, float, float] | None = None  # (from, until, when set: time.monotonic())
        self.first_frame_at: float | None = None  # (time.monotonic(): the gateway logs it per session)
        self.report_first_frame = lambda: None

    def add_audio(self, start_s: float, pcm: np.ndarray) -> None:
        with self._lock:
            if self._pcm_start is None:
                self._pcm_start, self.position = start_s, start_s
            self._pcm = np.concatenate([self._pcm, pcm])

    def add_video(self, time_s: float, frame: Any) -> None:
        with self._lock:
            self._frames.append((time_s, frame))
            if self.first_frame_at is None:
                self.first_frame_at = time.monotonic()

    def interrupt(self) -> None:
        """The user spoke over the avatar: silence from here on, until cut_at says where the speech ends."""
        with self._lock:
            self._mask = (self.position, float("inf"), time.monotonic())

    def cut_at(self, time_code: float) -> None:
        """The pipeline cut the speech at `time_code`: what plays from there on is heard again."""
        with self._lock:
            start = self._mask[0] if self._mask else self.position
            self._mask = (start, time_code, time.monotonic())

    def _masked(self, t: float) -> bool:
        if self._mask is None:
            return False
        start, until, since = self._mask
        if until == float("inf") and time.monotonic() - since > UNMASK_AFTER_S:
            self._mask = None
            return False
        if t >= until - 1e-6:  # (positions are sums of 20 ms steps: not exact)
            self._mask = None  # (the timeline went past it: over for good)
            return False
        return t >= start - 1e-6

    def take_audio(self) -> np.ndarray:
        """The next AUDIO_PTIME of the timeline (silence while masked), or silence without advancing."""
        with self._lock:
            if self._pcm_start is None:
                return np.zeros(AUDIO_SAMPLES, np.int16)
            offset = int(round((self.position - self._pcm_start) * AUDIO_RATE))
            if offset + AUDIO_SAMPLES > len(self._pcm):
                return np.zeros(AUDIO_SAMPLES, np.int16)  # the pipeline is late: the clock waits
            chunk = self._pcm[offset:offset + AUDIO_SAMPLES]
            masked = self._masked(self.position)
            self.position += AUDIO_PTIME
            drop = offset + AUDIO_SAMPLES
            self._pcm, self._pcm_start = self._pcm[drop:], self._pcm_start + drop / AUDIO_RATE
            return np.zeros_like(chunk) if masked else chunk

    def queued_frames(self) -> int:
        with self._lock:
            return len(self._frames)

    def take_frame(self) -> Any:
        """The latest frame at or before the clock (the held one while masked); None before the first."""
        with self._lock:
            while len(self._frames) > 1 and self._frames[1][0] <= self.position + 1e-6:
                self._frames.popleft()
            if not self._frames:
                return self.shown
            t, frame = self._frames[0]
            if self.shown is None or (not self._masked(t) and (t <= self.position + 1e-6 or self._pcm_start is None)):
                self.shown = frame
            return self.shown


class _Pipe(io.RawIOBase):
    """The fragmented MP4 as it arrives, a blocking unseekable file for PyAV."""

    def __init__(self) -> None:
        self._chunks: queue.Queue = queue.Queue()
        self._buffer, self._eof = b"", False

    def readable(self) -> bool:
        return True

    def feed(self, data: bytes | None) -> None:
        self._chunks.put(data)

    def readinto(self, target) -> int:
        while not self._buffer:
            if self._eof:
                return 0
            item = self._chunks.get()
            if item is None:
                self._eof = True
                return 0
            self._buffer = item
        n = min(len(target), len(self._buffer))
        target[:n], self._buffer = self._buffer[:n], self._buffer[n:]
        return n


def decode_into(pipe: _Pipe, playout: Playout) -> None:
    """Frames and 48 kHz mono PCM from the MP4 into the playout, as the fragments come."""
    import av

    resampler = av.AudioResampler(format="s16", layout="mono", rate=AUDIO_RATE)
    with av.open(pipe, format="mp4", options={"probesize": "32", "analyzeduration": "0"}) as container:
        audio_at: float | None = None
        first_audio = True
        for packet in container.demux():
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    playout.add_video(float(frame.time), frame)
                    continue
                if first_audio:  # AAC's priming frame: its timestamp is not on the video's timeline
                    first_audio = False
                    continue
                if audio_at is None:
                    audio_at = float(frame.time)
                for part in resampler.resample(frame):
                    pcm = part.to_ndarray().reshape(-1).astype(np.int16)
                    playout.add_audio(audio_at, pcm)


def _tracks(playout: Playout, fps: float):
    from aiortc import MediaStreamTrack
    import av

    class Audio(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self._start: float | None = None
            self._sent = 0

        async def recv(self):
            if self._start is None:
                self._start = time.monotonic()
            else:
                self._sent += AUDIO_SAMPLES
                wait = self._start + self._sent / AUDIO_RATE - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            frame = av.AudioFrame.from_ndarray(playout.take_audio().reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self._sent, fractions.Fraction(1, AUDIO_RATE)
            return frame

    class Video(MediaStreamTrack):
        kind = "video"
        clock = 90000

        def __init__(self) -> None:
            super().__init__()
            self._start: float | None = None
            self._count = 0

        async def recv(self):
            while (frame := playout.take_frame()) is None:  # (nothing to show before the first frame)
                await asyncio.sleep(0.01)
            if self._start is None:
                self._start = time.monotonic()
                playout.report_first_frame()
            else:
                self._count += 1
                wait = self._start + self._count / fps - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                frame = playout.take_frame()
            # (a held frame goes out again with a new timestamp: aiortc's sender encodes each frame
            # before it asks for the next, so setting it on the same object is safe)
            frame.pts, frame.time_base = int(self._count * self.clock / fps), fractions.Fraction(1, self.clock)
            return frame

    return Audio(), Video()


# -- a session ---------------------------------------------------------------------------------------

class _Requests:
    """LiveVideo's request stream for the servicer: the header, then what the data channel says."""

    def __init__(self, header: gw.LiveVideoHeader) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._queue.put(gw.LiveVideoRequest(header=header))

    def put(self, message: gw.LiveVideoRequest | object) -> None:
        self._queue.put(message)

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)  # (whoever reads again hears the end again)
            raise StopIteration
        return item


class _Context(_Raises):
    """The part of a ServicerContext GatewayServicer.LiveVideo uses (abort: raises _Abort)."""

    def __init__(self, session: "Session") -> None:
        self.session = session

    def is_active(self) -> bool:
        return not self.session.closed.is_set()


class Session:
    def __init__(self, front: "WebRtcFront", principal: str, header: gw.LiveVideoHeader) -> None:
        self.front, self.principal, self.header = front, principal, header
        self.id = uuid.uuid4().hex
        self.requests = _Requests(header)
        self.playout = Playout()
        self.pipe = _Pipe()
        self.closed = threading.Event()
        self.channel = None
        self.pc = None
        self.loop = asyncio.get_running_loop()
        self.started: asyncio.Future = self.loop.create_future()
        self.pipeline: threading.Thread | None = None
        self.first_text_at: float | None = None
        self.first_media_at: float | None = None
        self.playout.report_first_frame = self._report_first_frame
        self._held = False
        self.fps = 25.0

    # the pipeline, on a thread of its own (the servicer's code blocks)
    def run_pipeline(self) -> None:
        responses = self.front.servicer.LiveVideo(self.requests, _Context(self))
        try:
            for response in responses:
                kind = response.WhichOneof("response")
                if kind == "header":
                    self.fps = response.header.fps or 25.0
                    self._resolve(None)
                elif kind == "media":
                    if self.first_media_at is None:
                        self.first_media_at = time.monotonic()
                    self.pipe.feed(response.media)
                elif kind == "interrupted":
                    self.playout.cut_at(response.interrupted.time_code)
                    self.send({"interrupted": {"time_code": round(response.interrupted.time_code, 3),
                                               "heard_text": response.interrupted.heard_text}})
                elif kind == "end":
                    self.send({"end": {"captions": response.end.captions.webvtt,
                                       "warnings": list(response.end.warnings)}})
                if self.closed.is_set():
                    break
        except BaseException as exc:  # noqa: BLE001 - said to the browser (or the POST), then the session ends
            if not self.started.done():
                self._resolve(exc)
            elif not self.closed.is_set():
                log.info("webrtc session %s ended: %s", self.id, exc)
                self.send({"error": _http_error(exc).message})
        finally:
            responses.close()
            self.pipe.feed(None)
            self._resolve(RuntimeError("the live video ended before it started"))
            self.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self.front.end(self, drain=True)))

    def _report_first_frame(self) -> None:
        """How long the first frame took, and where (an operator's question when a viewer waits)."""
        text, now = self.first_text_at, time.monotonic()
        if text is not None:
            since = lambda t: "-" if t is None else f"{t - text:.2f} s"  # noqa: E731
            log.info("webrtc session %s: first frame sent %s after the first text (MP4 from the pipeline "
                     "after %s, decoded after %s)", self.id, since(now), since(self.first_media_at),
                     since(self.playout.first_frame_at))

    def run_decoder(self) -> None:
        try:
            decode_into(self.pipe, self.playout)
        except Exception as exc:  # noqa: BLE001 - a pipeline that ended early leaves a cut file
            if not self.closed.is_set() and self.first_media_at is not None:
                log.info("webrtc session %s: decoding stopped: %s", self.id, exc)

    def _resolve(self, exc: BaseException | None) -> None:
        def set_once() -> None:
            if not self.started.done():
                self.started.set_exception(exc) if exc is not None else self.started.set_result(None)
        self.loop.call_soon_threadsafe(set_once)

    def send(self, message: dict) -> None:
        """A message to the browser over the data channel (from any thread)."""
        def send_now() -> None:
            if self.channel is not None and self.channel.readyState == "open":
                self.channel.send(json.dumps(message))
        self.loop.call_soon_threadsafe(send_now)

    def on_message(self, raw: str | bytes) -> None:
        """{"text": "..."}, {"interrupt": true}, {"listening": true|false}, {"end": true}."""
        try:
            if len(raw) > MAX_MESSAGE_CHARS:
                raise ValueError(f"a message is at most {MAX_MESSAGE_CHARS} characters; send text in pieces")
            try:
                message = json.loads(raw)
            except ValueError:
                raise ValueError("not JSON") from None
            if not isinstance(message, dict) or len(message) != 1:
                raise ValueError('send one of {"text": ...}, {"interrupt": true}, {"listening": bool}, {"end": true}')
            (key, value), = message.items()
            if key == "text" and isinstance(value, str):
                if self.first_text_at is None and value.strip():
                    self.first_text_at = time.monotonic()
                self.requests.put(gw.LiveVideoRequest(text=value))
            elif key == "interrupt" and value is True:
                self.playout.interrupt()  # at once, here: the pipeline answers when it has cut
                self.requests.put(gw.LiveVideoRequest(interrupt=gw.Interrupt()))
            elif key == "listening" and isinstance(value, bool):
                self.requests.put(gw.LiveVideoRequest(listening=value))
            elif key == "end" and value is True:
                self.requests.put(gw.LiveVideoRequest(end_of_audio=ex.EndOfAudio()))
            else:
                raise ValueError('send one of {"text": ...}, {"interrupt": true}, {"listening": bool}, {"end": true}')
        except ValueError as exc:
            self.send({"error": _one_line(str(exc))})
        except Exception:  # noqa: BLE001 - a bug of ours: logged, and the session goes on
            log.exception("webrtc session %s: a data channel message failed", self.id)
            self.send({"error": "internal error (see the gateway's log)"})


class WebRtcFront:
    """The HTTP server: the page, photo uploads, and live sessions over WebRTC."""

    def __init__(self, gateway, host: str) -> None:
        self.gateway = gateway  # services.gateway.aio.AsyncGateway: its keys and per-principal stream count
        self.servicer = gateway.sync
        self.host = host
        self.sessions: dict[str, Session] = {}
        ice_servers()  # (a setting that does not parse stops the gateway at start, not each offer)
        _restrict_ice(host)

    def app(self):
        app = web.Application(client_max_size=assets.MAX_BYTES[gw.ASSET_KIND_PHOTO] + 1024,
                              middlewares=[self._errors])
        app.router.add_get("/", self.page)
        app.router.add_post("/v1/assets", self.upload)
        app.router.add_post("/v1/live", self.offer)
        app.router.add_delete("/v1/live/{session}", self.delete)
        return app

    async def start(self, port: int):
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]
        log.info("WebRTC front on http://%s:%d/", self.host, bound)
        return runner, bound

    # -- HTTP ----------------------------------------------------------------------------------------

    @web.middleware
    async def _errors(self, request, handler):
        try:
            return await handler(request)
        except HttpError as exc:
            return web.Response(status=exc.status, text=exc.message + "\n", headers=exc.headers)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001
            error = _http_error(exc)
            if error.status >= 500:
                log.error("webrtc front: %s %s failed", request.method, request.path, exc_info=exc)
            return web.Response(status=error.status, text=error.message + "\n", headers=error.headers)

    def _principal(self, request) -> str:
        try:
            return auth.authenticate(self.gateway.keys, {"authorization": request.headers.get("Authorization", "")})
        except auth.Unauthenticated as exc:
            raise HttpError(401, str(exc).replace("metadata", "header"), {"WWW-Authenticate": "Bearer"}) from None

    async def page(self, request):
        return web.Response(text=PAGE.read_text(), content_type="text/html",
                            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})

    async def upload(self, request):
        import hashlib

        principal = self._principal(request)
        if request.query.get("kind", "photo") != "photo":
            raise HttpError(400, "kind: only photo is uploaded here (the gRPC UploadAsset takes every kind)")
        if request.content_type in SIMPLE_TYPES:  # what another site's form could send (no CORS preflight)
            raise HttpError(415, "send the photo's bytes with its image Content-Type (image/jpeg, image/png ...)")
        data = await request.read()
        header = gw.UploadAssetHeader(kind=gw.ASSET_KIND_PHOTO, sha256=hashlib.sha256(data).hexdigest(),
                                      size_bytes=len(data), content_type=request.content_type or "")
        assets.check_header(header)
        ctx = contextvars.copy_context()
        ctx.run(auth._principal.set, principal)
        response = await asyncio.get_running_loop().run_in_executor(
            self.gateway.pool, ctx.run, self.servicer.store_upload, header, data)
        return web.json_response({"asset_id": response.asset_id, "existing": response.existing}, status=201)

    async def offer(self, request):
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        principal = self._principal(request)
        header = _header(request.query)
        if request.content_type != "application/sdp":
            raise HttpError(415, "send the offer as Content-Type: application/sdp")
        if (request.content_length or 0) > MAX_SDP_BYTES:
            raise HttpError(413, f"offer: at most {MAX_SDP_BYTES} bytes")
        sdp = (await request.content.read(MAX_SDP_BYTES + 1)).decode("utf-8", errors="replace")
        if len(sdp) > MAX_SDP_BYTES:
            raise HttpError(413, f"offer: at most {MAX_SDP_BYTES} bytes")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=ice_servers()))
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(_reachable_candidates(sdp, self.host), "offer"))
            except Exception:  # noqa: BLE001 - aiortc's parser raises what it meets (ValueError, KeyError, ...)
                raise HttpError(400, "offer: not a WebRTC SDP offer (send the browser's "
                                     "RTCPeerConnection.createOffer() SDP, after ICE gathering)") from None
            if "m=video" not in sdp or "m=application" not in sdp:
                raise HttpError(400, "offer: must receive video (and audio) and open a data channel for the text")
            session = await self._start(principal, header, pc)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            await pc.close()
            raise
        self._watch(session)
        return web.Response(status=201, text=pc.localDescription.sdp, content_type="application/sdp",
                            headers={"Location": f"/v1/live/{session.id}"})

    async def delete(self, request):
        principal = self._principal(request)
        session = self.sessions.get(request.match_info["session"])
        if session is None or session.principal != principal:
            raise HttpError(404, "no such live session (ended already?)")
        await self.end(session)
        return web.Response(status=204)

    # -- sessions ------------------------------------------------------------------------------------

    async def _start(self, principal: str, header: gw.LiveVideoHeader, pc) -> Session:
        """The live pipeline running (its slot held, its rig prepared), the tracks on the connection."""
        try:
            self.gateway._hold_stream(principal)  # (LIKENESS_MAX_STREAMS_PER_PRINCIPAL, as gRPC streams)
        except _Abort as exc:
            raise _http_error(exc) from None
        session = Session(self, principal, header)
        session._held = True
        session.pc = pc
        self.sessions[session.id] = session
        ctx = contextvars.copy_context()
        ctx.run(auth._principal.set, principal)
        session.pipeline = threading.Thread(target=ctx.run, args=(session.run_pipeline,),
                                            name=f"webrtc-{session.id[:8]}", daemon=True)
        session.pipeline.start()
        threading.Thread(target=session.run_decoder, name=f"webrtc-decode-{session.id[:8]}", daemon=True).start()
        try:
            await session.started
        except BaseException:
            await self.end(session)
            raise
        audio, video = _tracks(session.playout, session.fps)
        pc.addTrack(audio)
        pc.addTrack(video)

        @pc.on("datachannel")
        def on_datachannel(channel) -> None:
            session.channel = channel
            channel.on("message", session.on_message)
        return session

    def _watch(self, session: Session) -> None:
        """Ends the session when its peer goes: ICE/DTLS failed or closed, disconnected for
        DISCONNECTED_GRACE_S, or never connected within CONNECT_TIMEOUT_S."""
        pc = session.pc

        async def later(delay: float, still: set[str]) -> None:
            await asyncio.sleep(delay)
            if pc.connectionState in still:
                log.info("webrtc session %s: peer %s for %.0f s; ending it", session.id, pc.connectionState, delay)
                await self.end(session)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.end(session)
            elif pc.connectionState == "disconnected":
                asyncio.ensure_future(later(DISCONNECTED_GRACE_S, {"disconnected"}))

        asyncio.ensure_future(later(CONNECT_TIMEOUT_S, {"new", "connecting"}))

    async def end(self, session: Session, drain: bool = False) -> None:
        """Stops the pipeline (its slot freed) and closes the connection; `drain`: the pipeline ended
        by itself, so what is decoded plays out first."""
        if drain and not session.closed.is_set():
            until = time.monotonic() + 60.0
            while session.pc is not None and session.pc.connectionState == "connected" and \
                    session.playout.queued_frames() > 1 and time.monotonic() < until and not session.closed.is_set():
                await asyncio.sleep(0.1)
        if session.closed.is_set():
            return
        session.closed.set()
        session.requests.put(_END)
        if self.sessions.pop(session.id, None) is not None and session._held:
            self.gateway._release_stream(session.principal)
        if session.pc is not None:
            await session.pc.close()
        if session.pipeline is not None and session.pipeline is not threading.current_thread():
            # (so that a DELETE answers once the place is free: the servicer frees it as its thread ends)
            await asyncio.get_running_loop().run_in_executor(None, session.pipeline.join, 10.0)

    async def close(self) -> None:
        for session in list(self.sessions.values()):
            await self.end(session)


_ASSET_ID = re.compile(r"^[0-9a-fA-F]{64}$")


def _header(query) -> gw.LiveVideoHeader:
    """The LiveVideo header from the query: photo (an asset id), voice, language, speed, seed. Checked
    by from_live_pb with the rest (the servicer's LiveVideo); here only what the query's text means."""
    unknown = [name for name in query if name not in QUERY_FIELDS]
    if unknown:
        raise HttpError(400, f"{_one_line(unknown[0], 40)}: unknown parameter (known: {', '.join(QUERY_FIELDS)})")
    header = gw.LiveVideoHeader(speech=gw.LiveSpeech(voice=query.get("voice", ""),
                                                     language=query.get("language", "")))
    if "photo" in query:
        header.photo.asset_id = query["photo"]
    for name, target in (("speed", float), ("seed", int)):
        if name in query:
            try:
                value = target(query[name])
            except ValueError:
                raise HttpError(400, f"{name}: must be a number") from None
            if name == "speed":
                header.speech.speed = value
            elif 0 <= value < 2 ** 32:
                header.seed = value
            else:
                raise HttpError(400, "seed: must be 0 to 2^32-1")
    return header
