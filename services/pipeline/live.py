"""Live video in-process: audio as it is spoken, or text as it is written, in; fragmented MP4 out while
it comes (`likeness live` without --server). The gateway's LiveVideo composes the same stages over gRPC
(services/gateway/live.py)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from services.common.domain.captions import build_cues
from services.common.domain.errors import InputError
from services.common.domain.speech import Speech
from services.common.live.pacing import LivePiece, paced_audio
from services.common.live.script import LiveScript, paced
from services.pipeline.request import LIVE_AUDIO, LIVE_TEXT, VideoRequest

if TYPE_CHECKING:
    from likeness_client.markers import Interrupt, Listen
    from services.pipeline.embedded import EmbeddedPipeline


@dataclass
class LiveResult:
    frames: int = 0
    duration_s: float = 0.0
    warnings: list[str] = field(default_factory=list)
    captions: list = field(default_factory=list)  # services.common.domain.captions cues (a live video from text)


def live_video(pipeline: "EmbeddedPipeline", request: VideoRequest,
               audio: Iterable["np.ndarray | LivePiece | Interrupt"], sample_rate: int | None,
               stream_to: Callable[[bytes], None], *, from_text: bool = False,
               on_interrupt: Callable[[float, str], None] | None = None) -> LiveResult:
    """A live video: `audio` yields mono float pieces as they are spoken (a microphone, a voice
    agent); the face follows the sound alone (request.script is not used) and fragmented MP4 with
    that audio goes to `stream_to` while the audio is still arriving (services.expression.diffusion.live;
    a frame is out ~0.4-1 s after its audio, plus rendering). Pieces may be LivePieces (their
    emotion changes and motions apply; `sample_rate` None: theirs). Audio pushed faster than it is
    heard waits at most LIKENESS_LIVE_SPEECH_LEAD_S ahead of the clock, so that an INTERRUPT item
    can stop it (services.common.live.pacing; `on_interrupt(time_code, "")` is told where)."""
    # (the animator loads torch and the renderer its models: the gateway imports this package for the
    # request alone)
    from services.expression import LiveAnimator
    from services.render import AudioFeed, stream_mp4, Compositor, load_photo, FramePump, Renderer, build_rig
    from services.render import box_finder, detector, segmenter

    request.validate(LIVE_TEXT if from_text else LIVE_AUDIO)
    keypoints = None if request.keypoints is None else np.asarray(request.keypoints, np.float64)
    rig = build_rig(load_photo(request.photo), frame=request.frame, detect=detector(pipeline.client),
                    segment=segmenter(pipeline.client), find=box_finder(pipeline.client), keypoints=keypoints)
    renderer = (Renderer(rig) if rig.stage is None
                else Compositor(Renderer(rig), rig.stage, seed=request.seed, fps=request.fps))
    if not from_text and sample_rate is not None:  # (text comes paced already)
        audio = paced_audio(audio, sample_rate, seed=request.seed, on_interrupt=on_interrupt)
    feed = AudioFeed()
    result = LiveResult(warnings=list(rig.warnings))
    animator: LiveAnimator | None = None
    pump: FramePump | None = None

    def start(rate: int) -> LiveAnimator:
        """The animator and the encoder, once the audio's sample rate is known."""
        nonlocal pump
        started = LiveAnimator(pipeline.client, rate, fps=request.fps, seed=request.seed,
                               emotion=request.base_emotion, expressiveness=request.expressiveness)
        pump = FramePump(lambda item, index: renderer.render(*item), name="live-encode",
                         encode=lambda frames: stream_mp4(frames, feed, rate, request.fps, stream_to))
        return started

    def hand_over() -> None:
        for item in zip(*animator.take()):
            pump.put(item)

    try:
        for piece in audio:
            if animator is None:
                animator = start(sample_rate or piece.sample_rate)
            if isinstance(piece, LivePiece):
                for time_code, emotion, strength in piece.emotions:
                    animator.push_emotion(time_code, emotion, strength)
                for time_code, motion, strength in piece.motions:
                    animator.push_motion(time_code, motion, strength)
                piece = piece.audio
            piece = np.asarray(piece, np.float32).reshape(-1)
            feed.push(piece)
            animator.push_audio(piece)
            hand_over()
            if pump.failure is not None:
                break
        if animator is not None:
            animator.end()
            hand_over()
    finally:
        feed.end()
        if pump is not None:
            pump.end()
            pump.join()
    if animator is None or animator.features.received == 0:
        raise InputError("audio", "no audio was given")
    if pump.failure is not None:
        raise pump.failure
    result.frames = pump.frames
    result.duration_s = animator.features.duration
    return result


def live_text(pipeline: "EmbeddedPipeline", request: VideoRequest, text: Iterable["str | Interrupt | Listen"],
              stream_to: Callable[[bytes], None], *, lead_s: float | None = None,
              on_interrupt: Callable[[float, str], None] | None = None) -> LiveResult:
    """A live video from text as it is written (an LLM's reply, in any pieces): spoken a sentence at
    a time in the request's voice (voice, voice_sample, speed, language), the face resting in
    silence at real-time pace while no sentence is ready (services.common.live.script); an
    INTERRUPT item stops the speech (the user spoke over the avatar; `on_interrupt(time_code,
    heard_text)` is told where and what of the reply was said); the result carries the
    captions. request.script is not used."""
    request.validate(LIVE_TEXT)
    warnings: list[str] = []

    def speak(sentence: str) -> Speech:
        speech, said = pipeline.speech(replace(request, script=sentence, driving_audio=None))
        warnings.extend(w for w in said if w not in warnings)
        return speech

    script = LiveScript(speak, auto_emotion=request.emotion == "auto", auto_motions=request.auto_motions)
    result = live_video(pipeline, request, paced(text, script, lead_s=lead_s, seed=request.seed, on_interrupt=on_interrupt),
                       None, stream_to, from_text=True)
    result.warnings += warnings + script.warnings
    result.captions = build_cues(script.words, script.text, script.duration)
    return result
