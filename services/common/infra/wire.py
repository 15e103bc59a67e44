"""Conversions between the domain types (Speech, ExpressionTrack, ...) and likeness.v1 messages.

One place for them, so every service encodes audio, timelines and frames the same way.
"""
from __future__ import annotations

import numpy as np

from services.common.domain.arkit import ARKIT_52, HEAD_POSE
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from likeness_client.proto.likeness.v1 import common_pb2 as pb, expression_pb2
from services.common.domain.speech import Phone, Speech, Word

EMOTIONS = {pb.EMOTION_UNSPECIFIED: "neutral", pb.EMOTION_NEUTRAL: "neutral", pb.EMOTION_HAPPY: "happy",
            pb.EMOTION_SAD: "sad", pb.EMOTION_ANGRY: "angry", pb.EMOTION_SURPRISED: "surprised"}
EXPRESSIVENESS = {pb.EXPRESSIVENESS_UNSPECIFIED: "medium", pb.EXPRESSIVENESS_LOW: "low",
                  pb.EXPRESSIVENESS_MEDIUM: "medium", pb.EXPRESSIVENESS_HIGH: "high"}
MOTIONS = {value: pb.Motion.Name(value).removeprefix("MOTION_").lower() for value in pb.Motion.values()
           if value != pb.MOTION_UNSPECIFIED}  # names as services.expression.motions.MOTIONS
MOTION_ENUM = {name: value for value, name in MOTIONS.items()}
EMOTION_ENUM = {name: value for value, name in EMOTIONS.items() if value != pb.EMOTION_UNSPECIFIED}
EXPRESSIVENESS_ENUM = {name: value for value, name in EXPRESSIVENESS.items()
                       if value != pb.EXPRESSIVENESS_UNSPECIFIED}


# -- time-coded emotions and motions ------------------------------------------------------------

def check_timed(time_code: float, strength: float, field: str) -> float:
    """The strength of a time-coded emotion or motion (0 means 1), or InputError naming `field`."""
    if not 0.0 <= time_code < 1e6:
        raise InputError(f"{field}.time_code", f"must be seconds from the start of the audio, got {time_code}")
    if not 0.0 <= strength <= 1.0:
        raise InputError(f"{field}.strength", f"must be in (0, 1] (0 means 1), got {strength:g}")
    return strength or 1.0


def timed_emotion_from_pb(timed: expression_pb2.TimedEmotion, field: str = "emotion") -> tuple[float, str, float]:
    """(seconds, emotion, strength) of a TimedEmotion, or InputError naming `field`."""
    if timed.emotion not in EMOTIONS:
        raise InputError(f"{field}.emotion", "unknown value")
    return timed.time_code, EMOTIONS[timed.emotion], check_timed(timed.time_code, timed.strength, field)


def timed_motion_from_pb(timed: expression_pb2.TimedMotion, field: str = "motion") -> tuple[float, str, float]:
    """(seconds, motion, strength) of a TimedMotion, or InputError naming `field`."""
    if timed.motion not in MOTIONS:
        raise InputError(f"{field}.motion", "unknown value")
    return timed.time_code, MOTIONS[timed.motion], check_timed(timed.time_code, timed.strength, field)


def timed_emotion_to_pb(time_code: float, emotion: str, strength: float) -> expression_pb2.TimedEmotion:
    return expression_pb2.TimedEmotion(time_code=time_code, emotion=EMOTION_ENUM[emotion], strength=strength)


def timed_motion_to_pb(time_code: float, motion: str, strength: float) -> expression_pb2.TimedMotion:
    return expression_pb2.TimedMotion(time_code=time_code, motion=MOTION_ENUM[motion], strength=strength)


# -- stored objects ------------------------------------------------------------------------------

def object_ref(info) -> pb.ObjectRef:
    """The ObjectRef of a stored object (services.common.infra.storage.ObjectInfo)."""
    return pb.ObjectRef(bucket=info.bucket, key=info.key, sha256=info.sha256 or "", size_bytes=info.size,
                        content_type=info.content_type)


# -- audio ---------------------------------------------------------------------------------------

def audio_to_pb(samples: np.ndarray, sample_rate: int,
                encoding: int = pb.AUDIO_ENCODING_PCM_S16LE) -> pb.Audio:
    samples = np.asarray(samples, np.float32)
    if encoding == pb.AUDIO_ENCODING_PCM_F32LE:
        data = samples.astype("<f4").tobytes()
    else:
        encoding = pb.AUDIO_ENCODING_PCM_S16LE
        data = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
    return pb.Audio(format=pb.AudioFormat(encoding=encoding, sample_rate=sample_rate, channels=1), data=data)


def sample_width(fmt: pb.AudioFormat, field: str = "audio.format") -> int:
    """Bytes per sample of a supported AudioFormat (`field` names it in errors)."""
    if fmt.sample_rate < 8000 or fmt.sample_rate > 192000:
        raise InputError(f"{field}.sample_rate", f"must be 8000..192000 Hz, got {fmt.sample_rate}")
    if fmt.encoding == pb.AUDIO_ENCODING_PCM_F32LE:
        return 4
    if fmt.encoding in (pb.AUDIO_ENCODING_PCM_S16LE, pb.AUDIO_ENCODING_UNSPECIFIED):
        return 2
    raise InputError(f"{field}.encoding", "unsupported encoding")


def pcm_to_float(data: bytes, fmt: pb.AudioFormat, field: str = "audio") -> np.ndarray:
    """Raw PCM bytes -> float32 mono (channels averaged)."""
    width = sample_width(fmt, f"{field}.format")
    channels = fmt.channels or 1
    if len(data) % (width * channels):
        raise InputError(f"{field}.data", f"length {len(data)} is not a whole number of {channels}-channel frames")
    if width == 4:
        samples = np.frombuffer(data, "<f4").astype(np.float32)
    else:
        samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples


class PcmStream:
    """Raw PCM that arrives in chunks (a live stream) -> float32 mono per chunk; a chunk may end inside
    a sample frame, the next one continues it."""

    def __init__(self, fmt: pb.AudioFormat, field: str = "audio_format") -> None:
        self.frame_bytes = sample_width(fmt, field) * (fmt.channels or 1)  # checks rate and encoding up front
        self.fmt, self.field = fmt, field
        self._pending = b""

    def decode(self, chunk: bytes) -> np.ndarray:
        data = self._pending + chunk
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = data[whole:]
        return pcm_to_float(data[:whole], self.fmt, field=self.field)

    def finish(self, field: str = "audio_chunk") -> None:
        if self._pending:
            raise InputError(field, f"the audio ends inside a sample frame ({len(self._pending)} stray bytes)")


def audio_from_pb(audio: pb.Audio, field: str = "audio") -> tuple[np.ndarray, int]:
    return pcm_to_float(audio.data, audio.format, field), audio.format.sample_rate


# -- timeline / speech ---------------------------------------------------------------------------

def timeline_to_pb(speech: Speech, language: str = "") -> pb.Timeline:
    return pb.Timeline(
        phones=[pb.Phone(symbol=p.symbol, start=p.start, end=p.end, stress=p.stress, word_index=p.word_index)
                for p in speech.phones],
        words=[pb.Word(text=w.text, start=w.start, end=w.end) for w in speech.words],
        text=speech.text, language=language, duration=speech.duration)


def speech_from_pb(audio: np.ndarray, sample_rate: int, timeline: pb.Timeline | None) -> Speech:
    if timeline is None:
        return Speech(audio=audio, sample_rate=sample_rate)
    return Speech(audio=audio, sample_rate=sample_rate, text=timeline.text,
                  phones=[Phone(p.symbol, p.start, p.end, p.stress, p.word_index) for p in timeline.phones],
                  words=[Word(w.text, w.start, w.end) for w in timeline.words])


# -- expression frames ---------------------------------------------------------------------------

def blendshape_header(fps: float) -> pb.BlendshapeHeader:
    return pb.BlendshapeHeader(blendshape_names=list(ARKIT_52), head_pose_names=list(HEAD_POSE), fps=fps)


def frames_to_pb(track: ExpressionTrack, start: int = 0, stop: int | None = None) -> list[pb.ExpressionFrame]:
    stop = len(track) if stop is None else stop
    return [pb.ExpressionFrame(time_code=i / track.fps, weights=track.weights[i].tolist(),
                               head_pose=track.head_pose[i].tolist()) for i in range(start, stop)]


def track_from_pb(fps: float, frames: list[pb.ExpressionFrame], field: str = "frames") -> ExpressionTrack:
    for i, frame in enumerate(frames):
        if len(frame.weights) != len(ARKIT_52) or len(frame.head_pose) != len(HEAD_POSE):
            raise InputError(f"{field}[{i}]", f"needs {len(ARKIT_52)} weights and {len(HEAD_POSE)} head_pose values")
    weights = np.array([f.weights for f in frames], np.float32).reshape(-1, len(ARKIT_52))
    pose = np.array([f.head_pose for f in frames], np.float32).reshape(-1, len(HEAD_POSE))
    if not np.isfinite(weights).all() or not np.isfinite(pose).all():
        raise InputError(field, "weights and head_pose must be finite numbers")
    return ExpressionTrack(fps=fps, weights=np.clip(weights, 0.0, 1.0), head_pose=pose)
