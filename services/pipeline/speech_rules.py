"""What a request says and in which voice: the rules the gateway's admission (every violation at
once) and the embedded pipeline's VideoRequest (the first one) share, so both refuse the same
requests with the same words."""
from __future__ import annotations

from dataclasses import dataclass, field

from services.common.script.auto_emotion import with_auto_emotions
from services.common.script.auto_motion import with_auto_motions
from services.common.script.pauses import split_pauses, strip_pauses
from services.common.script.ssml import from_ssml
from services.common.script.tags import ScriptTag, near_misses, strip_tags, with_room_for_motions
from services.common.domain.errors import InputError
from services.tts import check_script_length, check_speed, check_voice

WORDS = "words"  # the field of "needs the words" (captions); each caller names it its own way


@dataclass
class CheckedSpeech:
    text: str | None  # the script (or transcript) without its emotion and motion tags; None: not known
    tags: list[ScriptTag] = field(default_factory=list)
    voice: str = ""  # the built-in voice's catalogue name; "": the default
    violations: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # e.g. a mistyped tag, which is read out


def reading_words(auto_emotion: bool, auto_motions: bool) -> list[tuple[str, str]]:
    """The violations of asking a live video from audio to read its words: it has none."""
    return [(field, "reads the words: it goes with text, not audio")
            for field, asked in (("emotion", auto_emotion), ("auto_motions", auto_motions)) if asked]


def prepared_script(script: str, *, recording: bool, auto_emotion: bool = False, auto_motions: bool = False,
                    field: str = "script") -> tuple[str, list[ScriptTag]]:
    """(the text to speak, its tags): SSML read (services.common.script.ssml), tags taken out, each sentence's
    emotion added when `auto_emotion` (services.common.script.auto_emotion), yes/no/question motions when
    `auto_motions` (services.common.script.auto_motion), room made for motions after the last words."""
    text, tags = strip_tags(from_ssml(script, field), field)
    if auto_motions:
        tags = with_auto_motions(text, tags)
    if not recording:
        text = with_room_for_motions(text, tags)
    if auto_emotion:
        tags = with_auto_emotions(text, tags)
    return text, tags


def check_speech(script: str | None, *, recording: bool, cloned: bool, voice: str = "", speed: float = 1.0,
                 needs_words: bool = False, script_field: str = "script", auto_emotion: bool = False,
                 auto_motions: bool = False) -> CheckedSpeech:
    """`script`: the text to speak, or a recording's transcript (`recording`); None when it could not
    be read (its own violation is reported elsewhere). `cloned`: a voice sample was sent.
    `needs_words`: captions were asked for. `auto_emotion`, `auto_motions`: see prepared_script."""
    out = CheckedSpeech(text=None)

    def check(name: str, fn):
        try:
            return fn()
        except InputError as exc:
            out.violations.append((name, exc.message))

    if recording and cloned:
        out.violations.append(("voice_sample", "a driving recording already carries the voice; send a voice "
                                               "sample only with a script to synthesize"))
    if script is not None:
        check(script_field, lambda: check_script_length(script, script_field))
        tagged = check(script_field, lambda: prepared_script(script, recording=recording, auto_emotion=auto_emotion,
                                                             auto_motions=auto_motions, field=script_field))
        if tagged is not None:
            out.text, out.tags = tagged
            out.warnings = [f"{script_field}: {w}" for w in near_misses(out.text)]
            if not recording:
                check(script_field, lambda: split_pauses(out.text, script_field))
                if not strip_pauses(out.text):
                    out.violations.append((script_field, "is empty (send a script, or a driving recording)"
                                           if not script.strip() else "has nothing to say but tags"))
            elif needs_words and not strip_pauses(out.text):
                out.violations.append((WORDS, "needs the words: send the recording's transcript"))
    if speed != 1.0:
        if recording:
            out.violations.append(("speed", "a recording is lip-synced at its own pace"))
        else:
            check("speed", lambda: check_speed(speed))
    if voice:
        if cloned or recording:
            out.violations.append(("voice", "a voice sample or a driving recording brings its own voice"))
        else:
            out.voice = check("voice", lambda: check_voice(voice)) or ""
    return out
