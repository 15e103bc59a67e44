"""Every LIKENESS_* setting in one place: its name, default, type, meaning and who reads it.

Code reads a setting through the typed accessors below (`get_int("LIKENESS_MAX_SCRIPT_CHARS")`),
never from os.environ directly (tests/test_config_documented.py checks both that and that
docs/configuration.md, generated from this registry by scripts/gen_config_doc.py, is current). The
accessors read the environment when called, so a setting read inside a function follows the
environment at that moment; a module that reads one at import time fixes it for the process.

Parsing rules, the same for every setting: an unset variable gives the default; for int, float, bool
and list settings an empty value counts as unset; str settings are returned as written (an empty
LIKENESS_VOICE_CACHE_DIR means "no disk cache"). A value that does not parse raises ConfigError naming
the variable. Booleans accept 1/0, true/false, yes/no, on/off in any case. Lists are comma-separated
numbers.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["str", "int", "float", "bool", "list"]
MiB = 1024 * 1024


class ConfigError(ValueError):
    """A LIKENESS_* variable holds a value its setting cannot take."""


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Kind
    default: Any  # typed (a tuple of floats for "list"); None: the caller supplies it
    meaning: str
    used_by: str
    documented: str | None = None  # the default as docs/configuration.md writes it, when not plainly str(default)


def _s(name: str, kind: Kind, default: Any, meaning: str, used_by: str, documented: str | None = None) -> Setting:
    return Setting(name, kind, default, meaning, used_by, documented)


_ALL = [
    # -- addresses and ports ---------------------------------------------------------------------------------
    _s("LIKENESS_GRPC_PORT", "int", None, "gRPC port of this service", "every service", "50051-50054"),
    _s("LIKENESS_METRICS_PORT", "int", None, "Prometheus metrics port of this service", "every service", "9101-9104"),
    _s("LIKENESS_TTS_ADDR", "str", "127.0.0.1:50052", "tts service address", "gateway", "127.0.0.1:50052/3/4"),
    _s("LIKENESS_EXPRESSION_ADDR", "str", "127.0.0.1:50053", "expression service address", "gateway",
       "127.0.0.1:50052/3/4"),
    _s("LIKENESS_RENDER_ADDR", "str", "127.0.0.1:50054", "render service address", "gateway", "127.0.0.1:50052/3/4"),
    _s("LIKENESS_GATEWAY_ADDR", "str", "127.0.0.1:50051", "gateway address", "`likeness submit`"),
    _s("LIKENESS_API_KEY", "str", "", "API key sent as 'authorization: Bearer' (empty: none)",
       "`likeness submit`, LikenessClient", "unset"),
    _s("LIKENESS_TLS_CA_FILE", "str", "", "PEM root certificate(s) to verify a TLS gateway (empty: plaintext)",
       "`likeness submit`, LikenessClient", "unset"),
    _s("LIKENESS_TRITON_URL", "str", "", "Triton gRPC host:port; empty: models run in-process",
       "tts, expression, render, CLI", "unset"),
    _s("LIKENESS_TRITON_TIMEOUT", "float", 60.0, "seconds per Triton inference call", "inference client"),
    # -- storage ---------------------------------------------------------------------------------------------
    _s("LIKENESS_S3_ENDPOINT", "str", "127.0.0.1:9000", "S3 host:port", "storage"),
    _s("LIKENESS_S3_ACCESS_KEY", "str", "", "S3 access key (required by services)", "storage", "required"),
    _s("LIKENESS_S3_SECRET_KEY", "str", "", "S3 secret key (required by services)", "storage", "required"),
    _s("LIKENESS_S3_BUCKET", "str", "likeness", "S3 bucket", "storage"),
    _s("LIKENESS_S3_SECURE", "bool", False, "S3 over TLS", "storage"),
    _s("LIKENESS_S3_MAX_ATTEMPTS", "int", 4, "attempts per S3 call (retries on transient errors)", "storage"),
    # -- gateway ---------------------------------------------------------------------------------------------
    _s("LIKENESS_MAX_CONCURRENT_JOBS", "int", 2, "jobs run at once", "gateway"),
    _s("LIKENESS_MAX_QUEUED_JOBS", "int", 16, "jobs waiting before new ones are refused", "gateway"),
    _s("LIKENESS_MAX_STREAMS", "int", 2, "video streams (StreamVideo and LiveVideo) at once, per gateway replica",
       "gateway"),
    _s("LIKENESS_LIVE_IDLE_LEAD_S", "float", 0.5, "live text: silence keeps the audio this far ahead of "
       "the clock while no sentence is ready (0: none)", "gateway, `likeness live --text-in`", "0.5 s"),
    _s("LIKENESS_LIVE_SPEECH_LEAD_S", "float", 1.5, "live: speech goes out at most this far ahead of "
       "the clock (after the first 2 s, which go at once), so an interrupt stops it within about that "
       "(0: as fast as it comes)",
       "gateway, `likeness live`", "1.5 s"),
    _s("LIKENESS_JOB_SAVE_INTERVAL_S", "float", 2.0, "least seconds between progress-only job record writes",
       "gateway"),
    _s("LIKENESS_JOB_DEADLINE_S", "float", 1800.0, "seconds a job may run", "gateway"),
    _s("LIKENESS_RESULT_URL_TTL_S", "int", 900, "lifetime of result download URLs (s)", "gateway"),
    _s("LIKENESS_MAX_PHOTO_BYTES", "int", 20 * MiB, "largest photo upload", "gateway", "20 MiB"),
    _s("LIKENESS_MAX_AUDIO_BYTES", "int", 50 * MiB, "largest audio upload", "gateway", "50 MiB"),
    _s("LIKENESS_MAX_PHOTO_PIXELS", "int", 40_000_000, "largest photo (pixels)", "gateway, render", "40 000 000"),
    _s("LIKENESS_MAX_SCRIPT_CHARS", "int", 5000, "longest script", "gateway, tts"),
    _s("LIKENESS_WEBHOOK_SECRET", "str", "", "key of the webhooks' HMAC-SHA256 signature (empty: unsigned)",
       "gateway", "unset"),
    _s("LIKENESS_WEBHOOK_ALLOWED_HOSTS", "str", "", "comma-separated hosts webhooks may go to (empty: any)",
       "gateway", "unset"),
    _s("LIKENESS_WEBHOOK_ALLOW_HTTP", "bool", False, "webhooks may be plain http:// (default: https only)",
       "gateway"),
    _s("LIKENESS_WEBHOOK_ALLOWED_NETWORKS", "str", "", "comma-separated CIDRs webhooks may reach although not "
       "public (loopback, private, link-local: refused otherwise)", "gateway", "unset"),
    _s("LIKENESS_WEBHOOK_ATTEMPTS", "int", 6, "POSTs per webhook before giving up", "gateway"),
    _s("LIKENESS_WEBHOOK_BACKOFF_S", "float", 2.0, "wait before the first retry, doubling each time (s)",
       "gateway"),
    _s("LIKENESS_WEBHOOK_TIMEOUT_S", "float", 10.0, "seconds per webhook POST", "gateway"),
    _s("LIKENESS_API_KEYS_FILE", "str", "", "file of `principal:key` lines; set: every call needs a key and "
       "each principal sees only its own jobs and uploads (docs/security.md)", "gateway", "unset"),
    _s("LIKENESS_ADMIN_PRINCIPALS", "str", "", "comma-separated principals that see and manage every "
       "job and upload (operators)", "gateway", "unset"),
    _s("LIKENESS_JOB_LEASE_S", "float", 30.0, "a running job whose gateway replica stopped renewing its "
       "lease this long is taken over by another replica", "gateway"),
    _s("LIKENESS_DATABASE_URL", "str", "", "PostgreSQL DSN of the job database every gateway replica "
       "shares (`likeness serve` starts one)", "gateway", "required"),
    _s("LIKENESS_STREAM_IDLE_S", "float", 30.0, "an upload or a LiveVideo that sends nothing this long is "
       "closed (DEADLINE_EXCEEDED); a live caller keeps a quiet stream with silence or an empty text",
       "gateway", "30 s"),
    _s("LIKENESS_MAX_STREAMS_PER_PRINCIPAL", "int", 1000, "open WatchJob, UploadAsset, StreamVideo and "
       "LiveVideo calls one principal may hold on a gateway replica (more: RESOURCE_EXHAUSTED)", "gateway"),
    _s("LIKENESS_DATABASE_POOL_SIZE", "int", 10, "connections a gateway replica keeps to the job database",
       "gateway"),
    _s("LIKENESS_RETENTION_DAYS", "float", 0.0, "finished jobs and uploads older than this are deleted, with "
       "all they stored (0: kept until deleted)", "gateway"),
    _s("LIKENESS_MAX_JOBS_PER_PRINCIPAL", "int", -1, "queued + running jobs one principal may have, across "
       "replicas (-1: a quarter of LIKENESS_MAX_QUEUED_JOBS, at least 1; 0: no limit; API keys on only)",
       "gateway"),
    _s("LIKENESS_TLS_CERT_FILE", "str", "", "PEM certificate chain: the gateway serves TLS", "gateway", "unset"),
    _s("LIKENESS_TLS_KEY_FILE", "str", "", "PEM private key of that certificate", "gateway", "unset"),
    _s("LIKENESS_INTERNAL_TOKEN", "str", "", "shared secret the gateway sends on its calls to tts, "
       "expression and render, which then refuse calls without it (UNAUTHENTICATED)", "every service", "unset"),
    _s("LIKENESS_BIND_HOST", "str", "127.0.0.1", "address every service's gRPC, health and metrics ports "
       "listen on (Kubernetes: 0.0.0.0, set in the manifests)", "every service"),
    _s("LIKENESS_WEBRTC_PORT", "int", 0, "HTTP port of the gateway's WebRTC front (WHEP-style live video "
       "for a browser, and its page at /) beside the gRPC port (0: off)", "gateway", "0 (off)"),
    _s("LIKENESS_WEBRTC_ICE_SERVERS", "str", "", "comma-separated STUN/TURN URLs the WebRTC front gathers "
       "candidates with (stun:host:port, turn:user:password@host:port); empty: host candidates on "
       "LIKENESS_BIND_HOST alone (loopback: a browser on the same machine)", "gateway", "unset"),
    _s("LIKENESS_HEALTH_PORT", "int", 0, "plaintext port serving gRPC health checks alone, on threads of "
       "its own (0: none), for probes of a busy service or a TLS gateway", "every service"),
    # -- tts -------------------------------------------------------------------------------------------------
    _s("LIKENESS_TTS_THREADS", "int", 0, "onnxruntime threads of the voice (0: onnxruntime decides)", "tts"),
    _s("LIKENESS_TTS_SENTENCE_SILENCE", "float", 0.2, "pause between sentences (s)", "tts", "0.2 s"),
    _s("LIKENESS_TTS_MAX_PHONEMES", "int", 400, "phonemes per voice call", "tts"),
    _s("LIKENESS_ESPEAK", "str", "espeak-ng", "espeak-ng program", "tts"),
    _s("LIKENESS_ALIGN_MIN_SCORE", "float", -32.0, "forced-alignment score below which audio is not the script",
       "tts"),
    _s("LIKENESS_RECORDING_MIN_S", "float", 1.0, "shortest driving recording (s of speech)", "tts"),
    _s("LIKENESS_RECORDING_SHORT_S", "float", 3.0, "a driving recording with less speech (s) is used "
       "with a warning", "tts"),
    _s("LIKENESS_RECORDING_MAX_S", "float", 300.0, "longest driving recording (s)", "tts"),
    _s("LIKENESS_VOICE_SAMPLE_MIN_S", "float", 1.0, "shortest voice sample (s of speech)", "tts"),
    _s("LIKENESS_VOICE_SAMPLE_SHORT_S", "float", 5.0, "a voice sample with less speech (s) is used "
       "with a warning", "tts"),
    _s("LIKENESS_VOICE_SAMPLE_MAX_S", "float", 60.0, "longest voice sample (s)", "tts"),
    _s("LIKENESS_AUDIO_TARGET_LUFS", "float", -18.0, "loudness recordings are normalised to", "tts"),
    _s("LIKENESS_AUDIO_SILENCE_DBFS", "float", -55.0, "peak below which a recording is silent", "tts"),
    _s("LIKENESS_AUDIO_WARN_CLIPPED", "float", 0.002, "fraction of clipped samples from which a recording "
       "is used with a warning", "tts"),
    _s("LIKENESS_AUDIO_MAX_CLIPPED", "float", 0.02, "fraction of clipped samples from which a recording "
       "is refused", "tts"),
    _s("LIKENESS_AUDIO_TRIM_DB", "float", 35.0, "trim frames this far below the loud part", "tts"),
    _s("LIKENESS_CLONE_STRENGTHS", "list", (0.5, 1.0, 1.5), "envelope-correction strengths tried", "tts",
       "0.5,1.0,1.5"),
    _s("LIKENESS_CLONE_TIMBRE_STEPS", "int", 60, "gradient steps of the timbre EQ fit (0: none)", "tts"),
    _s("LIKENESS_VOICE_CACHE_DIR", "str", "~/.cache/likeness/voices", "voice profile cache (empty: none)", "tts",
       "`~/.cache/likeness/voices`"),
    # unknown values fall back to "world" (services/tts/cloning/cloner.py), as they always have
    _s("LIKENESS_CLONE_METHOD", "str", "world", "cloning method: world, kokoro or auto", "tts"),
    _s("LIKENESS_CLONE_STYLE_EVALS", "int", 16, "Kokoro style search evaluations", "tts"),
    _s("LIKENESS_CLONE_MIN_CLARITY", "float", -12.0, "alignment score a searched voice must keep", "tts"),
    _s("LIKENESS_CLONE_AP_STEP", "int", 2, "WORLD aperiodicity frame step", "tts"),
    _s("LIKENESS_CLONE_FRAME_MS", "float", 5.0, "WORLD frame period of the conversion (ms)", "tts"),
    _s("LIKENESS_KOKORO_THREADS", "int", None, "onnxruntime threads of Kokoro", "tts", "`LIKENESS_TTS_THREADS`"),
    # -- expression ------------------------------------------------------------------------------------------
    _s("LIKENESS_MAX_AUDIO_SECONDS", "float", 600.0, "longest speech animated (s)", "expression"),
    _s("LIKENESS_DIFFUSION_WEIGHTS", "str", None, "diffusion model weights (.pt)", "expression",
       "committed `.pt`"),
    _s("LIKENESS_DIFFUSION_STEPS", "int", 8, "diffusion sampling steps", "expression"),
    _s("LIKENESS_DIFFUSION_ETA", "float", 1.0, "DDIM eta of the sampler", "expression"),
    _s("LIKENESS_DIFFUSION_THREADS", "int", 1, "torch threads of the sampler", "expression"),
    _s("LIKENESS_DIFFUSION_BLINK_TOPUP", "bool", True, "add seeded blinks where the model left gaps", "expression"),
    _s("LIKENESS_LIVE_STEP_FRAMES", "int", 16, "live: frames between windows (latency vs CPU)", "expression"),
    _s("LIKENESS_DIFFUSION_CACHE", "str", "~/.cache/likeness", "training data cache", "`make train-expression`",
       "`~/.cache/likeness`"),
    _s("LIKENESS_DIFFUSION_UTTERANCES", "int", 400, "piper training utterances", "`make train-expression`"),
    _s("LIKENESS_DIFFUSION_KOKORO", "int", 48, "Kokoro training utterances", "`make train-expression`"),
    _s("LIKENESS_DIFFUSION_SUNG", "int", 96, "sung training utterances", "`make train-expression`"),
    _s("LIKENESS_DIFFUSION_TRAIN_STEPS", "int", 4000, "training steps", "`make train-expression`"),
    _s("LIKENESS_TORCH_THREADS", "int", 2, "torch threads while training", "`make train-expression`"),
    # -- render ----------------------------------------------------------------------------------------------
    _s("LIKENESS_WATERMARK_STRENGTH", "int", 1, "grey levels of the invisible mark in every frame (0: none)",
       "render, CLI"),
    _s("LIKENESS_WATERMARK_KEY", "str", "likeness", "key of the invisible mark's pattern (`likeness inspect` "
       "needs the same)", "render, CLI"),
    _s("LIKENESS_X264_PRESET", "str", "veryfast", "x264 preset", "render", "`veryfast`"),
    _s("LIKENESS_MAX_PHOTO_YAW_DEG", "float", 40.0, "photos turned further are refused", "render"),
    _s("LIKENESS_MAX_PHOTO_PITCH_DEG", "float", 35.0, "photos tilted further are refused", "render"),
    _s("LIKENESS_MAX_PHOTO_ROLL_DEG", "float", 40.0, "photos rolled further are refused", "render"),
    _s("LIKENESS_MIN_FACE_PX", "int", 24, "smaller faces are refused (forehead to chin, photo px)", "render"),
    _s("LIKENESS_VP9_CRF", "int", 30, "VP9 quality (CRF)", "render"),
    _s("LIKENESS_VP9_CPU_USED", "int", 8, "VP9 speed", "render"),
    _s("LIKENESS_WARP_MAP_STEP", "int", 2, "grid step of the warp's source maps, px (1: exact; clamped to 1-4)",
       "render"),
    _s("LIKENESS_BREATHING", "bool", True, "breathing and shoulder motion", "render"),
    # (keypoint faces whose eyes cannot be measured in the photo: services/render/keypoints.measure_eye)
    _s("LIKENESS_KEYPOINT_EYE_WIDTH", "float", 0.5, "eye width / eye distance of keypoint faces", "render"),
    _s("LIKENESS_KEYPOINT_EYE_ASPECT", "float", 0.85, "eye height / width of keypoint faces", "render"),
    # -- every service ---------------------------------------------------------------------------------------
    # inline audio and frame chunks exceed gRPC's own 4 MiB limit
    _s("LIKENESS_GRPC_MAX_MESSAGE_BYTES", "int", 64 * MiB, "largest gRPC message",
       "every gRPC server/channel (LikenessClient: its max_message_bytes, default the same 64 MiB)", "64 MiB"),
    _s("LIKENESS_GRPC_MAX_CONNECTION_AGE_S", "int", 300, "gRPC connections are recycled after this (s)",
       "every gRPC server"),
    _s("LIKENESS_SHUTDOWN_DRAIN_S", "float", 2.0, "NOT_SERVING this long before refusing calls (SIGTERM)",
       "every service"),
    _s("LIKENESS_SHUTDOWN_GRACE_S", "float", 20.0, "in-flight calls get this long to finish (SIGTERM)",
       "every service"),
    _s("LIKENESS_LOG_LEVEL", "str", "INFO", "logging level", "every service", "`INFO`"),
    _s("LIKENESS_TRACE_FILE", "str", "", "write spans as JSON lines to this file (empty: no)", "traces", "unset"),
    _s("LIKENESS_TRITON_START_TIMEOUT", "float", 120.0, "seconds Triton may take to start", "`likeness serve`"),
    _s("LIKENESS_S3_START_TIMEOUT", "float", 30.0, "seconds the S3 server may take to start", "`likeness serve`"),
    _s("LIKENESS_VERBOSE", "bool", False, "show native (TFLite/mediapipe) logs", "CLI", "unset"),
]
SETTINGS: dict[str, Setting] = {s.name: s for s in _ALL}

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def parse_bool(name: str, raw: str) -> bool:
    """The one boolean parser: 1/0, true/false, yes/no, on/off, any case and surrounding blanks."""
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r}: expected one of 1/0, true/false, yes/no, on/off")


def _parse(setting: Setting, raw: str) -> Any:
    if setting.kind == "bool":
        return parse_bool(setting.name, raw)
    try:
        if setting.kind == "int":
            return int(raw)
        if setting.kind == "float":
            return float(raw)
        return tuple(float(part) for part in raw.split(",") if part.strip())
    except ValueError:
        expected = {"int": "an integer", "float": "a number", "list": "comma-separated numbers"}[setting.kind]
        raise ConfigError(f"{setting.name}={raw!r}: expected {expected}") from None


_REGISTERED = object()


def _read(name: str, kind: Kind, default: Any) -> Any:
    setting = SETTINGS[name]  # KeyError: register the setting above (then run scripts/gen_config_doc.py)
    if setting.kind != kind:
        raise TypeError(f"{name} is a {setting.kind} setting, read as {kind}")
    fallback = setting.default if default is _REGISTERED else default
    raw = os.environ.get(name)
    if raw is not None and (kind == "str" or raw.strip()):
        return raw if kind == "str" else _parse(setting, raw)
    if fallback is None:
        raise ConfigError(f"{name} has no registered default: the caller must pass one")
    return fallback


def get_str(name: str, default: str | Any = _REGISTERED) -> str:
    return _read(name, "str", default)


def get_int(name: str, default: int | Any = _REGISTERED) -> int:
    return _read(name, "int", default)


def get_float(name: str, default: float | Any = _REGISTERED) -> float:
    return _read(name, "float", default)


def get_bool(name: str, default: bool | Any = _REGISTERED) -> bool:
    return _read(name, "bool", default)


def get_floats(name: str, default: tuple[float, ...] | Any = _REGISTERED) -> tuple[float, ...]:
    return _read(name, "list", default)


@contextmanager
def override(name: str, value: str) -> Iterator[None]:
    """Sets a registered variable for the duration of a block (this process and children it starts)."""
    if name not in SETTINGS:
        raise KeyError(name)
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
