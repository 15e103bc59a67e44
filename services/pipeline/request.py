"""One video request, from the API (or the CLI) to every stage: parsed once, checked once.

`VideoRequest` is what a video is made of. The embedded pipeline takes it with bytes or paths; the
platform with `Stored` keys of uploaded assets, and a job row holds its `to_record()`. Its rules live
in `check_inputs` (diffusers' check_inputs: every violation at once); `from_submit_pb` and
`from_live_pb` are the one place the API's messages become one, naming fields in the API's terms.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from services.common.domain import directions
from services.common.domain.directions import EXPRESSIVENESS
from services.common.domain.errors import InputError
from services.common.infra import wire
from services.common.script.dialogue import NAME, Turn, parse_dialogue
from services.common.script.tags import near_misses
from likeness_client.proto.likeness.v1 import common_pb2, gateway_pb2 as gw
from services.pipeline.speech_rules import WORDS, check_speech, prepared_script, reading_words
from services.tts import check_language, check_readable, check_voice, language_code
from services.render import Background, FrameSpec, check_fps, check_framing, frame_to_pb, parse_frame_pb

EMOTIONS = (*directions.EMOTIONS, "auto")  # auto: services.common.script.auto_emotion
# What is checked: a video made at once, a live video from the caller's audio, or from its text.
VIDEO, LIVE_AUDIO, LIVE_TEXT = "video", "live_audio", "live_text"


@dataclass(frozen=True)
class Stored:
    """An object in the platform's storage (an uploaded asset): the platform's form of a media field."""

    key: str


Media = bytes | str | Path | Stored


@dataclass(frozen=True)
class VideoRequest:
    photo: Media
    script: str  # what is said; with driving_audio, the recording's transcript ("": none)
    size: int = 512  # the SHORTER side of the frame
    fps: float = 25.0
    seed: int = 0
    emotion: str = "neutral"
    expressiveness: str = "medium"
    language: str = "en-us"
    # Framing and output (services.render.layout).
    aspect: str = "1:1"  # 1:1, 9:16, 16:9 or 4:5
    fit: str = "cover"  # cover: fill the frame (crop); contain: the whole photo, padded
    background: Background | None = None  # None: the photo's own background (image: bytes or Stored)
    keypoints: tuple[tuple[float, float], ...] | None = None  # 5 points for faces no detector finds
    face_at: tuple[float, float] | None = None  # several people: the face at this photo point
    voice_sample: Media | None = None  # a recording of the voice to clone for the script
    driving_audio: Media | None = None  # a recording to lip-sync to; `script` (optional) is its transcript
    voice: str = ""  # a built-in voice (services.tts.voices); "": the default
    speed: float = 1.0  # speaking rate of the script (0.5-2.0)
    burn_captions: bool = False  # draw the captions into the frames
    auto_motions: bool = False  # nod on yes, shake on no, tilt on questions (services.common.script.auto_motion)
    # time-coded (seconds, name, strength) on top of the script's tags (a recording without a transcript)
    emotions: tuple[tuple[float, str, float], ...] = ()
    motions: tuple[tuple[float, str, float], ...] = ()
    # The platform's delivery options.
    export_blendshapes: bool = False
    webhook_url: str = ""
    script_field: str = "script"  # what the caller called the script (script, script_asset, transcript)

    @cached_property  # (speech, expression and warnings all ask; SSML and sentiment are read once)
    def spoken_script(self) -> tuple[str, list]:
        """(the script without its emotion and motion tags, the tags: speech_rules.prepared_script: a
        motion after the last words gets the silence it needs, each sentence its emotion with
        emotion "auto")."""
        return prepared_script(self.script or "", recording=self.driving_audio is not None,
                               auto_emotion=self.emotion == "auto", auto_motions=self.auto_motions,
                               field=self.script_field)

    @property
    def script_warnings(self) -> list[str]:
        """A mistyped tag, which is read out (services.common.script.tags.near_misses)."""
        return [f"{self.script_field}: {w}" for w in near_misses(self.spoken_script[0])]

    @property
    def base_emotion(self) -> str:
        """The emotion the face starts in ("auto" starts neutral: its sentences carry their own)."""
        return "neutral" if self.emotion == "auto" else self.emotion

    @property
    def frame(self) -> FrameSpec:
        return FrameSpec(size=self.size, aspect=self.aspect, fit=self.fit, background=self.background,
                         face_at=self.face_at)

    # -- checks ------------------------------------------------------------------------------------

    def validate(self, mode: str = VIDEO) -> None:
        """InputError (every violation) unless the request can be made; needs no model."""
        if violations := check_inputs(self, mode):
            raise InputError.many(violations)

    # -- the platform's form -------------------------------------------------------------------------

    def stored_keys(self) -> set[str]:
        """The stored assets the request reads (a deleted asset must not be one of a running job's)."""
        media = [self.photo, self.voice_sample, self.driving_audio, self.background and self.background.image]
        return {m.key for m in media if isinstance(m, Stored)}

    def to_record(self) -> dict:
        """JSON for a job row; only a request whose media are Stored keys has one."""
        record = {}
        for name, value in asdict(self).items():
            if isinstance(value, (bytes, Path)):
                raise TypeError(f"{name}: a job's request refers to stored objects, not to bytes or paths")
            record[name] = value
        return record

    @classmethod
    def from_record(cls, record: dict) -> "VideoRequest":
        def media(value):
            return Stored(**value) if isinstance(value, dict) else value

        fields = dict(record)
        for name in ("photo", "voice_sample", "driving_audio"):
            fields[name] = media(fields.get(name))
        if (bg := fields.get("background")) is not None:
            fields["background"] = Background(color=tuple(bg["color"]) if bg["color"] else None,
                                              image=media(bg["image"]), transparent=bg["transparent"])
        for name in ("keypoints", "face_at"):
            if fields.get(name) is not None:
                fields[name] = tuple(tuple(p) for p in fields[name]) if name == "keypoints" else tuple(fields[name])
        for name in ("emotions", "motions"):
            fields[name] = tuple(tuple(t) for t in fields.get(name, ()))
        return cls(**fields)

    def video_spec(self, bucket: str) -> common_pb2.VideoSpec:
        """The VideoSpec the render service takes (a Stored background image as an ObjectRef)."""
        image = self.background.image if self.background is not None else None
        spec = frame_to_pb(self.frame, fps=self.fps, keypoints=self.keypoints, background_image=(
            common_pb2.ObjectRef(bucket=bucket, key=image.key) if isinstance(image, Stored) else None))
        spec.burn_in_captions = self.burn_captions
        return spec


def _normalized(request: VideoRequest) -> VideoRequest:
    """A valid request's voice and language as the catalogues spell them ("" stays the default voice)."""
    return replace(request, voice=check_voice(request.voice) if request.voice else "",
                   language=language_code(request.language or "en-us"))


def check_inputs(request: VideoRequest, mode: str = VIDEO) -> list[tuple[str, str]]:
    """Every rule a request must keep, in one place: [(field, message)] of those it breaks.
    `mode`: VIDEO (the whole request), LIVE_AUDIO (the caller's audio follows: no script or voice),
    LIVE_TEXT (the caller's text follows: the voice, but not what it says)."""
    violations: list[tuple[str, str]] = []
    check = _collector(violations)
    r = request
    recording = r.driving_audio is not None
    language = check("language", lambda: check_language(r.language or "en-us"))
    if mode != LIVE_AUDIO:
        checked = check_speech(r.script if mode == VIDEO else None, recording=recording,
                               cloned=r.voice_sample is not None, voice=r.voice, speed=r.speed,
                               needs_words=r.burn_captions, script_field=r.script_field,
                               auto_emotion=r.emotion == "auto", auto_motions=r.auto_motions)
        violations += [("burn_captions" if name == WORDS else name, message) for name, message in checked.violations]
        if checked.text is not None and not recording and language:  # (a transcript is aligned, not spoken)
            check("language", lambda: check_readable(checked.text, language))
    else:
        violations += reading_words(r.emotion == "auto", r.auto_motions)
    for name in ("voice_sample", "driving_audio"):
        if getattr(r, name) is not None and not getattr(r, name):
            violations.append((name, "is empty"))
    for kind, names, items in (("emotion", wire.EMOTION_ENUM, r.emotions), ("motion", wire.MOTION_ENUM, r.motions)):
        for i, (time_code, name, strength) in enumerate(items):
            if name not in names:
                violations.append((f"{kind}s[{i}].{kind}", f"unknown {kind} {name!r}"))
            else:
                check(f"{kind}s[{i}]", lambda t=time_code, s=strength, i=i: wire.check_timed(t, s, f"{kind}s[{i}]"))
    check("fps", lambda: check_fps(r.fps))
    if r.emotion not in EMOTIONS:
        violations.append(("emotion", f"unknown emotion {r.emotion!r}; supported: {', '.join(EMOTIONS)}"))
    if r.expressiveness not in EXPRESSIVENESS:
        violations.append(("expressiveness",
                           f"unknown level {r.expressiveness!r}; supported: {', '.join(EXPRESSIVENESS)}"))
    if not isinstance(r.seed, int) or not 0 <= r.seed < 2**32:
        violations.append(("seed", f"must be from 0 to 2^32-1, got {r.seed}"))
    keypoints = None if r.keypoints is None else np.asarray(r.keypoints, np.float64)
    check("", lambda: check_framing(r.frame, keypoints))  # (its errors name their own fields)
    if mode != VIDEO:
        if r.frame.alpha:
            violations.append(("background", "a transparent video is not streamed (MP4 has no alpha)"))
        if r.burn_captions:
            violations.append(("burn_captions", "a live video's words are not known ahead of its frames "
                                                "(with speech, the end carries captions)"))
    return violations


# -- a dialogue: several faces, one video ------------------------------------------------------------

LAYOUTS = {"side-by-side": "16:9", "stacked": "9:16"}  # a dialogue's layout -> its frame's aspect
DIALOGUE_FACES = 2  # the layouts' panels (more faces: a later slice)
DEFAULT_GAP_S = 0.3  # from one turn's last word to the next turn's first
MAX_GAP_S = 5.0


@dataclass(frozen=True)
class CastMember:
    """Who plays a dialogue's speaker: the face (a photo) and the voice (built-in or cloned)."""

    name: str  # as the script's turns call them ("A" in "A: Hello")
    photo: Media
    voice: str = ""  # a built-in voice; "": the default
    voice_sample: Media | None = None  # a recording of the voice to clone


@dataclass(frozen=True)
class DialogueRequest:
    """A scripted dialogue: turns (`NAME: text`, services.common.script.dialogue) spoken by a cast, each
    face in its own panel of the layout. Every turn is checked as the single-face VideoRequest it is
    spoken as (`turn_request`): one set of rules for a script, whoever says it."""

    script: str
    cast: tuple[CastMember, ...]
    layout: str = "side-by-side"
    gap_s: float = DEFAULT_GAP_S
    size: int = 512  # the frame's shorter side
    fps: float = 25.0
    seed: int = 0
    emotion: str = "neutral"
    expressiveness: str = "medium"
    language: str = "en-us"
    speed: float = 1.0
    field: str = "dialogue"  # what the caller called the script

    @cached_property
    def turns(self) -> list[Turn]:
        return parse_dialogue(self.script, self.field)

    def member(self, name: str) -> CastMember:
        return next(m for m in self.cast if m.name == name)

    def turn_request(self, turn: Turn, seed: int | None = None) -> VideoRequest:
        """The turn as a single face's request: its speaker's photo and voice, the dialogue's style."""
        m = self.member(turn.speaker)
        return VideoRequest(photo=m.photo, script=turn.text, size=self.size, fps=self.fps,
                            seed=self.seed if seed is None else seed, emotion=self.emotion,
                            expressiveness=self.expressiveness, language=self.language, voice=m.voice,
                            voice_sample=m.voice_sample, speed=self.speed, script_field=self.field)

    @property
    def frame(self) -> FrameSpec:
        return FrameSpec(size=self.size, aspect=LAYOUTS.get(self.layout, "1:1"))

    @property
    def warnings(self) -> list[str]:
        """A cast member who never speaks (they only listen), and each turn's mistyped tags."""
        speaking = {t.speaker for t in self.turns}
        out = [f"cast: {m.name} never speaks (only listens)" for m in self.cast if m.name not in speaking]
        for turn in self.turns:
            out += [f"{w} (line {turn.line})" for w in self.turn_request(turn).script_warnings]
        return out

    def validate(self) -> None:
        if violations := check_dialogue(self):
            raise InputError.many(violations)


def _same_media(a: Media, b: Media) -> bool:
    if isinstance(a, (str, Path)) and isinstance(b, (str, Path)):
        return Path(a).resolve() == Path(b).resolve()
    return a == b  # (bytes: the same file read twice; Stored: the same key)


def check_dialogue(r: DialogueRequest) -> list[tuple[str, str]]:
    """Every rule a dialogue breaks: its own (layout, cast, turns) and, per turn, check_inputs' for the
    single face that speaks it (a turn's script problem is "dialogue: line N: ...")."""
    violations: list[tuple[str, str]] = []
    if r.layout not in LAYOUTS:
        violations.append(("layout", f"unknown layout {r.layout!r}; supported: {', '.join(LAYOUTS)}"))
    if not isinstance(r.gap_s, (int, float)) or not 0.0 <= r.gap_s <= MAX_GAP_S:
        violations.append(("gap", f"must be from 0 to {MAX_GAP_S:g} seconds, got {r.gap_s}"))
    names = [m.name for m in r.cast]
    if len(r.cast) != DIALOGUE_FACES:
        violations.append(("cast", f"a dialogue's layouts take {DIALOGUE_FACES} faces; got {len(r.cast)} "
                                   f"cast entries ({', '.join(names) or 'none'})"))
    for i, m in enumerate(r.cast):
        if not NAME.match(m.name):
            violations.append(("cast", f"{m.name!r} is not a speaker name (a letter, then letters, digits, _ or -)"))
        if m.name in names[:i]:
            violations.append(("cast", f"{m.name} is cast twice"))
        for other in r.cast[:i]:
            if _same_media(m.photo, other.photo):
                violations.append((f"cast.{m.name}.photo", f"is {other.name}'s photo too: each speaker needs "
                                                          "their own photo (one photo of two people: not yet)"))
        if isinstance(m.photo, (bytes, str)) and not m.photo:
            violations.append((f"cast.{m.name}.photo", "is empty"))
    try:
        turns = r.turns
    except InputError as exc:
        return violations + [(exc.field, exc.message)]
    cast = set(names)
    for turn in turns:
        if turn.speaker not in cast:
            violations.append((r.field, f"line {turn.line}: {turn.speaker} has no cast entry "
                                        f"(cast: {', '.join(names) or 'none'})"))
            continue
        for name, message in check_inputs(r.turn_request(turn), VIDEO):
            if name == r.field:
                violations.append((name, f"line {turn.line}: {message}"))
            elif name in ("voice", "voice_sample"):
                violations.append((f"cast.{turn.speaker}.{name}", message))
            else:
                violations.append((name, message))
    return list(dict.fromkeys(violations))


# -- the API's messages ----------------------------------------------------------------------------

# The request's field -> the API's (VideoSpec fields live under "video"; a live header's voice under "speech").
_VIDEO_FIELDS = {"size": "resolution", "fps": "fps", "aspect": "aspect_ratio", "fit": "fit",
                 "background": "background", "keypoints": "keypoints", "face_at": "face_at",
                 "burn_captions": "burn_in_captions"}
_SPEECH_FIELDS = ("voice", "voice_sample", "language", "speed")


def api_field(name: str, live: bool = False) -> str:
    """A check_inputs field as the API names it ("size" -> "video.resolution")."""
    head, dot, rest = name.partition(".")
    base = head.split("[")[0]
    if base in _VIDEO_FIELDS:
        return f"video.{_VIDEO_FIELDS[base]}{head[len(base):]}{dot}{rest}"
    if live and base in _SPEECH_FIELDS:
        return f"speech.{name}"
    return name


AssetFn = Callable[[gw.AssetSource, str], str]  # (source, field) -> the stored key, or InputError


def _collector(violations: list[tuple[str, str]]):
    def check(name: str, fn, default=None):
        try:
            return fn()
        except InputError as exc:
            violations.append((exc.field if exc.field.startswith(name) else name, exc.message))
            return default

    return check


def _style(msg, violations: list) -> tuple[str, str]:
    if msg.emotion not in wire.EMOTIONS and msg.emotion != common_pb2.EMOTION_AUTO:
        violations.append(("emotion", "unknown value"))
    if msg.expressiveness not in wire.EXPRESSIVENESS:
        violations.append(("expressiveness", "unknown value"))
    emotion = "auto" if msg.emotion == common_pb2.EMOTION_AUTO else wire.EMOTIONS.get(msg.emotion, "neutral")
    return emotion, wire.EXPRESSIVENESS.get(msg.expressiveness, "medium")


def _video(spec: common_pb2.VideoSpec, asset: AssetFn, check) -> dict:
    """The request's framing fields of a VideoSpec (problems through `check`)."""
    fields: dict = {"size": spec.resolution if spec.WhichOneof("size") == "resolution" else 512,
                    "fps": spec.fps or 25.0, "burn_captions": spec.burn_in_captions}
    parsed = check("video", lambda: parse_frame_pb(spec))
    if parsed is not None:
        frame, keypoints = parsed
        background = frame.background
        if background is not None and background.image is not None:
            key = check("video.background.image", lambda: asset(
                gw.AssetSource(object=spec.background.image), "video.background.image"))
            background = replace(background, image=Stored(key or ""))
        fields.update(aspect=frame.aspect, fit=frame.fit, background=background, face_at=frame.face_at,
                      keypoints=None if keypoints is None else tuple(map(tuple, keypoints.tolist())))
    return fields


def _seed(msg) -> int:
    return msg.seed if msg.HasField("seed") else random.randrange(2**31)


def from_submit_pb(r: gw.SubmitVideoRequest, asset: AssetFn, read_text: Callable[[str], str],
                   ) -> tuple[VideoRequest | None, list[tuple[str, str]]]:
    """(the request, or None with every violation in the API's field names). `asset` resolves an
    AssetSource to a stored key; `read_text` reads a script asset as text."""
    violations: list[tuple[str, str]] = []
    check = _collector(violations)
    fields: dict = {"export_blendshapes": r.export_blendshapes, "language": r.language or "en-us",
                    "webhook_url": r.webhook_url, "auto_motions": r.auto_motions, "seed": _seed(r)}
    if not r.HasField("photo"):
        violations.append(("photo", "is required"))
    fields["photo"] = Stored(check("photo", lambda: asset(r.photo, "photo")) or "" if r.HasField("photo") else "")
    which = r.WhichOneof("speech")
    script = ""
    if which is None:
        violations.append(("script", "a script, script_asset or driving_audio is required"))
    elif which == "driving_audio":
        fields["driving_audio"] = Stored(check("driving_audio", lambda: asset(r.driving_audio, "driving_audio")) or "")
        script, fields["script_field"] = r.transcript, "transcript"
    else:
        if r.transcript:
            violations.append(("transcript", "goes with driving_audio only; a script is spoken as written"))
        fields["script_field"] = which
        script = r.script if which == "script" else check(
            "script_asset", lambda: read_text(asset(r.script_asset, "script_asset")))
    if r.HasField("voice_sample"):
        fields["voice_sample"] = Stored(check("voice_sample", lambda: asset(r.voice_sample, "voice_sample")) or "")
    fields["emotions"] = tuple(t for i, e in enumerate(r.emotions) if (t := check(
        f"emotions[{i}]", lambda e=e, i=i: wire.timed_emotion_from_pb(e, f"emotions[{i}]"))) is not None)
    fields["motions"] = tuple(t for i, m in enumerate(r.motions) if (t := check(
        f"motions[{i}]", lambda m=m, i=i: wire.timed_motion_from_pb(m, f"motions[{i}]"))) is not None)
    fields["emotion"], fields["expressiveness"] = _style(r, violations)
    fields.update(_video(r.video, asset, check), voice=r.voice, speed=float(r.speed or 1.0))
    request = VideoRequest(script=script or "", **fields)
    violations += [(api_field(name), message) for name, message in check_inputs(request, VIDEO)
                   if script is not None or name != request.script_field]  # (an unreadable asset: said)
    return _result(request, violations)


def from_live_pb(h: gw.LiveVideoHeader, asset: AssetFn) -> tuple[VideoRequest | None, list[tuple[str, str]], str]:
    """(the request or None, every violation in the API's field names, its mode: LIVE_AUDIO or LIVE_TEXT)."""
    violations: list[tuple[str, str]] = []
    check = _collector(violations)
    fields: dict = {"auto_motions": h.auto_motions, "seed": _seed(h)}
    if not h.HasField("photo"):
        violations.append(("photo", "is required"))
    fields["photo"] = Stored(check("photo", lambda: asset(h.photo, "photo")) or "" if h.HasField("photo") else "")
    if h.HasField("audio_format") == h.HasField("speech"):
        violations.append(("audio_format", "either audio_format (the caller's audio follows) or speech "
                                           "(the caller's text follows) is required" if not h.HasField("speech")
                           else "not with speech: the server speaks the text in speech's voice"))
    elif h.HasField("audio_format"):
        check("audio_format", lambda: wire.sample_width(h.audio_format, "audio_format"))
    mode = LIVE_TEXT if h.HasField("speech") else LIVE_AUDIO
    if h.HasField("speech"):
        sp = h.speech
        fields.update(language=sp.language or "en-us", speed=float(sp.speed or 1.0), voice=sp.voice)
        if sp.HasField("voice_sample"):
            fields["voice_sample"] = Stored(check("speech.voice_sample",
                                                  lambda: asset(sp.voice_sample, "speech.voice_sample")) or "")
    fields["emotion"], fields["expressiveness"] = _style(h, violations)
    fields.update(_video(h.video, asset, check))
    request = VideoRequest(script="", **fields)
    violations += [(api_field(name, live=True), message) for name, message in check_inputs(request, mode)]
    return (*_result(request, violations), mode)


def _result(request: VideoRequest, violations: list[tuple[str, str]]
            ) -> tuple[VideoRequest | None, list[tuple[str, str]]]:
    """(the normalised request, or None with the violations, each said once)."""
    violations = list(dict.fromkeys(violations))
    return (None, violations) if violations else (_normalized(request), [])
