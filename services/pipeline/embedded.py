"""The embedded pipeline: photo + script -> talking video, every stage in-process.

Small named stages wired in one direction (tts -> expression -> render -> encode), in the
spirit of LivePortrait's pipeline object. The gateway service composes the same stages over
gRPC; this object is the no-servers default behind `likeness generate`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from services.common.domain.captions import build_cues
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.infra.inference import InferenceClient, client_from_env
from services.common.domain.speech import Speech
from services.common.script.pauses import speak_with_pauses, strip_pauses
from services.common.script.tags import timed_emotions, timed_motions
from services.pipeline import live
from services.pipeline.live import LiveResult
from services.pipeline.request import VideoRequest
from services.render import PosterPicker

if TYPE_CHECKING:
    from services.common.live.listening import Listen
    from services.common.live.pacing import Interrupt, LivePiece

# Stage names double as progress labels and as keys of stage outputs in object storage.
STAGES: tuple[str, ...] = ("rig", "tts", "expression", "render")
ProgressFn = Callable[[str, float], None]


@dataclass
class VideoResult:
    path: Path | None  # None when the video was streamed
    speech: Speech
    track: ExpressionTrack
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    poster: np.ndarray | None = None  # services.render.poster: RGB, or RGBA for a transparent video


def check_output_path(path: str | Path, suffixes: tuple[str, ...] = (".mp4",), field: str = "out") -> Path:
    """Fail before any work if the result could not be written (services.render.check_writable)."""
    from services.render import check_writable  # (services.render.formats loads PyAV)

    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise InputError(field, f"{out} must end with {' or '.join(suffixes)}")
    if out.is_dir():
        raise InputError(field, f"{out} is a directory")
    return check_writable(out, field)


class EmbeddedPipeline:
    """Loads each stage's model once; `generate` can then be called many times.

    Models run through `client`: in-process by default, or a Triton server when
    LIKENESS_TRITON_URL is set (see services.common.infra.inference).
    """

    def __init__(self, client: InferenceClient | None = None) -> None:
        # (the stages load on use: the gateway imports this package through services.pipeline for the
        # request alone, and `likeness --help` stays fast)
        from services.tts import ModelVoice, TextToSpeech, VoiceBank

        self.client = client or client_from_env()
        self.tts = TextToSpeech(voice=ModelVoice(self.client))
        self.voices = VoiceBank(self.tts, self.client)
        self._cloner = None

    def speech(self, request: VideoRequest) -> tuple[Speech, list[str]]:
        """(the request's speech: synthesized (in a cloned voice with a voice sample) or the user's own
        recording, prepared and aligned to the script when there is one; warnings)."""
        speech, warnings = self._speech(request)
        return speech, request.script_warnings + warnings

    def _speech(self, request: VideoRequest) -> tuple[Speech, list[str]]:
        from services.tts import DRIVING, driving_speech, prepare_recording  # (scipy.signal: ~2 s)

        script = request.spoken_script[0]
        if request.driving_audio is not None:
            prepared = prepare_recording(request.driving_audio, field=DRIVING)
            return driving_speech(prepared, strip_pauses(script), field=DRIVING), list(prepared.warnings)
        if request.voice_sample is None:
            return speak_with_pauses(script, lambda text: self.voices.speak(
                text, request.voice, seed=request.seed, speed=request.speed, language=request.language)), []
        from services.tts import ProfileCache, VoiceCloner  # (the cloning models: only for a voice sample)

        if self._cloner is None:
            self._cloner = VoiceCloner(self.tts, self.client, voices=self.voices)
        profile = ProfileCache.from_env().get_or_build(request.voice_sample, self._cloner.build_profile)
        return speak_with_pauses(script, lambda text: self._cloner.clone(
            self.tts.synthesize(text, seed=request.seed, speed=request.speed, language=request.language),
            profile, speed=request.speed, language=request.language)), list(profile.warnings)

    def expression(self, speech: Speech, request: VideoRequest) -> ExpressionTrack:
        """The speech's expression track (services.expression.animation), the script's emotion and
        motion tags timed by its words."""
        from services.expression import animate  # (torch)

        script, tags = request.spoken_script  # (tag offsets are in the script as written, pause tags included)
        return animate(self.client, speech, fps=request.fps, seed=request.seed, emotion=request.base_emotion,
                       expressiveness=request.expressiveness,
                       emotions=[*timed_emotions(tags, speech.words, script), *request.emotions],
                       motions=[*timed_motions(tags, speech.words, script), *request.motions])

    def face(self, photo, frame, *, keypoints: np.ndarray | None = None, seed: int = 0):
        """(the photo's rig, the renderer of its frames as `frame` (a FrameSpec) frames them)."""
        from services.render import Compositor, Renderer, box_finder, build_rig, detector, load_photo, segmenter

        rig = build_rig(load_photo(photo), frame=frame, detect=detector(self.client), segment=segmenter(self.client),
                        find=box_finder(self.client), keypoints=keypoints)
        return rig, Renderer(rig) if rig.stage is None else Compositor(Renderer(rig), rig.stage, seed=seed)

    def generate(self, request: VideoRequest, out_path: str | Path | None,
                 progress: ProgressFn = lambda stage, fraction: None,
                 stream_to: Callable[[bytes], None] | None = None) -> VideoResult:
        """Renders the video to `out_path`, or with `stream_to` hands it over while it is encoded
        (fragmented MP4: a player can start at once; `out_path` is then unused)."""
        # (the renderer: PyAV, mediapipe, the models)
        from services.render import stream_mp4, check_output, write_video

        request.validate()
        if stream_to is None:
            out, _ = check_output(out_path, alpha=request.frame.alpha)
        elif request.frame.alpha:
            raise InputError("out", "a transparent video is not streamed (MP4 has no alpha); write a .webm")
        else:
            out = None
        seconds: dict[str, float] = {}

        t0 = time.perf_counter()
        progress("rig", 0.0)
        keypoints = None if request.keypoints is None else np.asarray(request.keypoints, np.float64)
        rig, renderer = self.face(request.photo, request.frame, keypoints=keypoints, seed=request.seed)
        seconds["rig"] = time.perf_counter() - t0
        progress("rig", 1.0)

        t0 = time.perf_counter()
        progress("tts", 0.0)
        speech, speech_warnings = self.speech(request)
        seconds["tts"] = time.perf_counter() - t0
        progress("tts", 1.0)

        t0 = time.perf_counter()
        progress("expression", 0.0)
        track = self.expression(speech, request)
        seconds["expression"] = time.perf_counter() - t0
        progress("expression", 1.0)

        t0 = time.perf_counter()
        total = len(track)

        overlay = None
        if request.burn_captions:
            from services.render import CaptionOverlay  # (its fonts: only for burnt-in captions)

            overlay = CaptionOverlay(build_cues(speech.words, speech.text, speech.duration), request.frame.frame_size)

        poster = PosterPicker()

        def frames():
            for i, frame in enumerate(renderer.render_track(track)):
                if i % 10 == 0:
                    progress("render", i / total)
                poster.offer(track.weights[i], frame)
                yield overlay.apply(frame, i / track.fps) if overlay else frame

        if out is None:
            stream_mp4(frames(), speech.audio, speech.sample_rate, track.fps, stream_to)
        else:
            write_video(frames(), speech.audio, speech.sample_rate, track.fps, out, alpha=request.frame.alpha)
        seconds["render"] = time.perf_counter() - t0
        progress("render", 1.0)
        return VideoResult(path=out, speech=speech, track=track, warnings=list(rig.warnings) + speech_warnings,
                           stage_seconds=seconds, poster=poster.image)

    def live(self, request: VideoRequest, audio: Iterable["np.ndarray | LivePiece | Interrupt"],
             sample_rate: int | None, stream_to: Callable[[bytes], None], *, from_text: bool = False,
             on_interrupt: Callable[[float, str], None] | None = None) -> LiveResult:
        """A live video from audio as it is spoken: services.pipeline.live.live_video."""
        return live.live_video(self, request, audio, sample_rate, stream_to, from_text=from_text,
                               on_interrupt=on_interrupt)

    def live_text(self, request: VideoRequest, text: Iterable["str | Interrupt | Listen"],
                  stream_to: Callable[[bytes], None], *, lead_s: float | None = None,
                  on_interrupt: Callable[[float, str], None] | None = None) -> LiveResult:
        """A live video from text as it is written: services.pipeline.live.live_text."""
        return live.live_text(self, request, text, stream_to, lead_s=lead_s, on_interrupt=on_interrupt)
