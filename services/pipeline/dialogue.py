"""A scripted dialogue: several faces, each in its panel, talking in turns and listening between them.

    turns (services.common.script.dialogue) -> each spoken in its speaker's voice (EmbeddedPipeline.speech)
    -> one timeline: the next turn's first word `gap_s` after the last one's last word -> the mix
    -> per speaker one expression track over the whole timeline (animate on its own turns, silence
       elsewhere: the mouth rests closed) with listening motions while another speaks
    -> per speaker a rig and renderer, its frames cropped to its panel -> one video, the mix as audio.

A listener does what services.common.live.listening.Listening does for a live avatar (a tilt and
raised brows as the other starts, small nods every few seconds) and first glances toward the speaker's
panel (a look motion: eyes, then part of the head).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.common.domain.captions import Cue, build_cues
from services.common.domain.expression_track import ExpressionTrack
from services.common.domain.speech import Speech, join_speech
from services.common.live.listening import Listening
from services.common.script.tags import timed_emotions, timed_motions
from services.pipeline.embedded import EmbeddedPipeline, ProgressFn
from services.pipeline.request import DialogueRequest

LISTEN_AFTER_S = 0.25  # a listener reacts a beat after the other starts
QUIET_BEFORE_END_S = 0.8  # no listening nod starts this close to the turn's end (it would run into a reply)
GLANCE = {"side-by-side": (("look_left", "look_right"), 0.35),  # toward the other panel: left face looks
          "stacked": (("look_down", "look_up"), 0.2)}  # image-right (its own left); vertical glances: smaller
STAGES = ("rig", "tts", "expression", "render")


@dataclass
class PlacedTurn:
    speaker: str
    line: int
    start: float  # seconds into the dialogue
    speech: Speech  # at its voice's sample rate
    script: str  # the text spoken, tags out (their offsets index it)
    tags: list

    @property
    def end(self) -> float:
        return self.start + self.speech.duration


@dataclass
class DialogueResult:
    path: Path
    audio: np.ndarray  # the mix
    sample_rate: int
    turns: list[PlacedTurn]
    tracks: dict[str, ExpressionTrack]  # per speaker, over the whole dialogue
    cues: list[Cue]  # captions, each "NAME: text"
    warnings: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return len(self.audio) / float(self.sample_rate)


def place_turns(speeches: list[Speech], gap_s: float) -> list[float]:
    """Each turn's start: from the last word of one turn to the first of the next is `gap_s` (the voices'
    own silence around their words counts toward it, as a [pause] does), never an overlap."""
    starts, t = [], 0.0
    for i, speech in enumerate(speeches):
        if i:
            before = speeches[i - 1]
            own = before.duration - (before.words[-1].end if before.words else before.duration)
            own += speech.words[0].start if speech.words else 0.0
            t += max(gap_s - own, 0.0)
        starts.append(t)
        t += speech.duration
    return starts


def mix(turns: list[PlacedTurn]) -> tuple[np.ndarray, int]:
    """One mono track at the highest of the voices' rates, each turn at its start."""
    from scipy.signal import resample_poly  # (scipy: ~1 s, only here)

    rate = max(t.speech.sample_rate for t in turns)
    end = max(t.end for t in turns)
    out = np.zeros(int(round(end * rate)) + 1, np.float32)
    for turn in turns:
        audio = np.asarray(turn.speech.audio, np.float32)
        if turn.speech.sample_rate != rate:
            g = np.gcd(rate, turn.speech.sample_rate)
            audio = resample_poly(audio, rate // g, turn.speech.sample_rate // g).astype(np.float32)
        at = int(round(turn.start * rate))
        n = min(len(audio), len(out) - at)
        out[at:at + n] += audio[:n]
    return np.clip(out[:int(round(end * rate))], -1.0, 1.0), rate


def speaker_timeline(turns: list[PlacedTurn], speaker: str, total_s: float) -> Speech:
    """The speaker's side of the dialogue as one Speech: its turns as spoken, silence (one "sil" phone,
    as a pause) wherever it does not speak (throughout, for a cast member who never does)."""
    rate = next((t.speech.sample_rate for t in turns if t.speaker == speaker), turns[0].speech.sample_rate)
    parts, gaps, t = [Speech(audio=np.zeros(0, np.float32), sample_rate=rate)], [], 0.0  # (then silence)
    for turn in (t for t in turns if t.speaker == speaker):
        gaps.append(turn.start - t)
        parts.append(turn.speech)
        t = turn.end
    gaps.append(max(total_s - t, 0.0))
    speech = join_speech(parts, gaps)
    speech.phones = [p for p in speech.phones if p.end > p.start]
    speech.text = speech.text.strip()
    return speech


def listening_motions(turns: list[PlacedTurn], speaker: str, panel: int, layout: str,
                      seed: int) -> list[tuple[float, str, float]]:
    """The speaker's motions while the others talk: a glance toward the talker's panel, then
    Listening's lean-in and nods, none starting too close to the end of the other's turn."""
    listening = Listening(seed)
    (toward_next, toward_previous), strength = GLANCE[layout]
    out = []
    for turn in turns:
        if turn.speaker == speaker:
            continue
        start = turn.start + LISTEN_AFTER_S
        out.append((start, toward_next if panel == 0 else toward_previous, strength))
        listening.start(start)
        out += listening.motions(start, turn.end - QUIET_BEFORE_END_S)
        listening.stop()
    return out


def speaker_cues(turns: list[PlacedTurn]) -> list[Cue]:
    """Captions of every turn, timed on the dialogue's timeline, each cue led by its speaker's name
    (plain text: it shows in WebVTT and SRT players alike)."""
    cues = []
    for i, turn in enumerate(turns):
        until = turns[i + 1].start - turn.start if i + 1 < len(turns) else turn.speech.duration
        for cue in build_cues(turn.speech.words, turn.speech.text, until):
            cues.append(Cue(start=round(cue.start + turn.start, 3), end=round(cue.end + turn.start, 3),
                            text=f"{turn.speaker}: {cue.text}"))
    return cues


def panels(layout: str, frame_size: tuple[int, int], count: int) -> list[tuple[int, int, int, int]]:
    """Each face's (x, y, width, height) in the frame: side by side, or stacked top to bottom."""
    width, height = frame_size
    if layout == "side-by-side":
        edges = [round(i * width / count) for i in range(count + 1)]
        return [(x0, 0, x1 - x0, height) for x0, x1 in zip(edges, edges[1:])]
    edges = [round(i * height / count) for i in range(count + 1)]
    return [(0, y0, width, y1 - y0) for y0, y1 in zip(edges, edges[1:])]


class DialoguePipeline:
    """A dialogue through the embedded pipeline's stages (its voices, models and rigs)."""

    def __init__(self, pipeline: EmbeddedPipeline | None = None) -> None:
        self.pipeline = pipeline or EmbeddedPipeline()

    def speak(self, request: DialogueRequest) -> tuple[list[PlacedTurn], list[str]]:
        """Every turn in its speaker's voice, placed on one timeline (warnings: a cloned voice's)."""
        spoken, warnings = [], []
        for i, turn in enumerate(request.turns):
            single = request.turn_request(turn, seed=(request.seed + i) % 2**32)  # (turns vary like sentences)
            speech, said = self.pipeline.speech(single)
            warnings += [f"cast.{turn.speaker}: {w}" for w in said  # (a cloned voice's, once per speaker)
                         if w not in single.script_warnings and f"cast.{turn.speaker}: {w}" not in warnings]
            script, tags = single.spoken_script
            spoken.append((turn, speech, script, tags))
        starts = place_turns([s for _, s, _, _ in spoken], request.gap_s)
        turns = [PlacedTurn(turn.speaker, turn.line, start, speech, script, tags)
                 for (turn, speech, script, tags), start in zip(spoken, starts)]
        return turns, warnings

    def expressions(self, request: DialogueRequest, turns: list[PlacedTurn], total_s: float
                    ) -> dict[str, ExpressionTrack]:
        """Per cast member, a track over the whole dialogue (services.expression.animate)."""
        from services.expression import animate  # (torch)

        tracks = {}
        for panel, member in enumerate(request.cast):
            own = [t for t in turns if t.speaker == member.name]
            emotions, motions = [], []
            for turn in own:  # (the script's tags, timed by the turn's words, moved to its start)
                emotions += [(s + turn.start, n, v) for s, n, v in timed_emotions(turn.tags, turn.speech.words,
                                                                                  turn.script)]
                motions += [(s + turn.start, n, v) for s, n, v in timed_motions(turn.tags, turn.speech.words,
                                                                                turn.script)]
            seed = (request.seed + 7919 * panel) % 2**32  # (two faces never blink or sway in step)
            motions += listening_motions(turns, member.name, panel, request.layout, seed)
            speech = speaker_timeline(turns, member.name, total_s)
            tracks[member.name] = animate(self.pipeline.client, speech, fps=request.fps, seed=seed,
                                          emotion=request.emotion if request.emotion != "auto" else "neutral",
                                          expressiveness=request.expressiveness, emotions=emotions,
                                          motions=sorted(motions))
        return tracks

    def generate(self, request: DialogueRequest, out_path: str | Path,
                 progress: ProgressFn = lambda stage, fraction: None) -> DialogueResult:
        from services.common.domain.errors import InputError
        from services.render import FrameSpec, check_output, write_video

        request.validate()
        out, _ = check_output(out_path)
        seconds: dict[str, float] = {}
        frame_w, frame_h = request.frame.frame_size
        boxes = panels(request.layout, (frame_w, frame_h), len(request.cast))

        t0 = time.perf_counter()
        progress("rig", 0.0)
        renderers, warnings = [], []
        for member, (_, _, w, h) in zip(request.cast, boxes):
            side = max(w, h) + max(w, h) % 2  # framed as a single face is, then cropped to the panel
            try:
                rig, renderer = self.pipeline.face(member.photo, FrameSpec(size=side), seed=request.seed)
            except InputError as exc:  # (which photo: the field names the cast member)
                raise InputError(f"cast.{member.name}.{exc.field}", exc.message) from None
            renderers.append(renderer)
            warnings += [f"cast.{member.name}: {w}" for w in rig.warnings]
        seconds["rig"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress("tts", 0.0)
        turns, speech_warnings = self.speak(request)
        audio, rate = mix(turns)
        total_s = len(audio) / rate
        seconds["tts"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        progress("expression", 0.0)
        tracks = self.expressions(request, turns, total_s)
        seconds["expression"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        count = min(len(t) for t in tracks.values())
        ordered = [tracks[m.name] for m in request.cast]

        def frames():
            streams = [r.render_track(t) for r, t in zip(renderers, ordered)]
            for i in range(count):
                if i % 10 == 0:
                    progress("render", i / count)
                canvas = np.empty((frame_h, frame_w, 3), np.uint8)
                for stream, (x, y, w, h) in zip(streams, boxes):
                    face = next(stream)[..., :3]
                    sy, sx = (face.shape[0] - h) // 2, (face.shape[1] - w) // 2
                    canvas[y:y + h, x:x + w] = face[sy:sy + h, sx:sx + w]
                yield canvas

        write_video(frames(), audio, rate, request.fps, out)
        seconds["render"] = time.perf_counter() - t0
        progress("render", 1.0)
        return DialogueResult(path=out, audio=audio, sample_rate=rate, turns=turns, tracks=tracks,
                              cues=speaker_cues(turns),
                              warnings=request.warnings + warnings + speech_warnings, stage_seconds=seconds)
