"""A scripted dialogue (services/pipeline/dialogue.py, `likeness generate --dialogue`): two faces from two
photos, each turn in its speaker's voice, one timeline and one mix, the speaker's mouth moving while the
listener's rests and its head reacts, captions naming the speakers, bad input refused in one line.
Real voices, models and renders, at 256 px."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.cli import main
from services.cli.helpers import read_cast
from services.common.domain.errors import InputError
from services.common.domain.arkit import ARKIT_52
from services.common.script.dialogue import parse_dialogue
from services.pipeline.dialogue import DialoguePipeline
from services.pipeline.request import CastMember, DialogueRequest
from services.render import decode_frames

ROOT = Path(__file__).resolve().parents[1]
ASTRONAUT = ROOT / "assets" / "photos" / "astronaut.png"
GRACE = ROOT / "assets" / "photos" / "grace_hopper.jpg"
CAT = ROOT / "assets" / "photos" / "cat.png"  # no face a detector finds
SCRIPT = """A: [happy] Hello Grace. Did you see the launch this morning?
B: I did. It was loud, and the whole building shook.
A: Louder than I expected."""
GAP_S = 0.6  # longer than the voices' own silences around their words: some of it is inserted
FPS = 25.0
MOUTH = (0.55, 0.75, 0.3, 0.7)  # a panel's mouth region (rows, columns as fractions): the face is centred


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("dialogue") / "talk.mp4"
    request = DialogueRequest(script=SCRIPT, cast=(CastMember("A", ASTRONAUT.read_bytes(), voice="joe"),
                                                   CastMember("B", GRACE.read_bytes(), voice="kokoro-female")),
                              size=256, fps=FPS, gap_s=GAP_S)
    result = DialoguePipeline().generate(request, out)
    frames = np.stack(list(decode_frames(out))).astype(np.float32)
    return result, frames


def spoken_frames(turn) -> slice:
    """The frames from the turn's first word to its last."""
    return slice(int((turn.start + turn.speech.words[0].start) * FPS),
                 int((turn.start + turn.speech.words[-1].end) * FPS))


def test_the_dialogue_renders_both_faces_side_by_side_in_16_9(dialogue) -> None:
    result, frames = dialogue
    assert frames.shape[1:] == (256, 456, 3)
    assert abs(len(frames) - result.duration * FPS) <= 1
    left, right = frames[0, :, :228], frames[0, :, 228:]
    assert np.abs(left.mean(axis=(0, 1)) - right.mean(axis=(0, 1))).max() > 10  # two photos, not one


def test_the_audio_is_the_turns_one_after_another_with_the_gap_between_their_words(dialogue) -> None:
    result, _ = dialogue
    turns = result.turns
    assert [t.speaker for t in turns] == ["A", "B", "A"]
    assert turns[0].start == 0.0
    inserted = 0.0
    for before, after in zip(turns, turns[1:]):
        assert after.start >= before.end - 1e-9  # never an overlap
        inserted += after.start - before.end
        last_word = before.start + before.speech.words[-1].end
        first_word = after.start + after.speech.words[0].start
        assert first_word - last_word == pytest.approx(GAP_S, abs=1e-6)
    assert inserted > 0
    expected = sum(t.speech.duration for t in turns) + inserted
    assert result.duration == pytest.approx(expected, abs=2.0 / result.sample_rate)
    # Each turn's voice is in the mix where it was placed (the two voices' rates differ: resampled).
    rate = result.sample_rate
    for turn in turns:
        words = result.audio[int((turn.start + turn.speech.words[0].start) * rate):
                             int((turn.start + turn.speech.words[-1].end) * rate)]
        assert np.sqrt(np.mean(words ** 2)) > 0.02
    gap = result.audio[int((turns[0].start + turns[0].speech.words[-1].end + 0.05) * rate):
                       int((turns[1].start + turns[1].speech.words[0].start - 0.05) * rate)]
    assert np.abs(gap).max() < 0.05


def test_in_each_turn_the_speakers_mouth_moves_and_the_listeners_rests(dialogue) -> None:
    result, frames = dialogue
    height, width = frames.shape[1:3]
    y0, y1, x0, x1 = MOUTH
    half = width // 2

    def mouth_motion(panel: int, span: slice) -> float:
        left = panel * half
        region = frames[span, int(y0 * height):int(y1 * height), left + int(x0 * half):left + int(x1 * half)]
        return float(np.abs(np.diff(region, axis=0)).mean())

    for turn in result.turns:
        span = spoken_frames(turn)
        speaker, listener = (0, 1) if turn.speaker == "A" else (1, 0)
        assert mouth_motion(speaker, span) > 2.0 * mouth_motion(listener, span), turn
        # the tracks say why: the listener's jaw stays shut, the speaker's opens
        assert result.tracks[turn.speaker].channel("jawOpen")[span].max() > 0.3
        other = "B" if turn.speaker == "A" else "A"
        assert result.tracks[other].channel("jawOpen")[span].max() < 0.02


def test_the_listener_nods_and_glances_toward_the_speaker(dialogue) -> None:
    result, _ = dialogue
    b_turn = result.turns[1]  # A (the left panel) listens to B for five seconds
    span = spoken_frames(b_turn)
    a = result.tracks["A"]
    pitch = np.degrees(a.head_pose[span, 0])
    assert pitch.max() - pitch.min() > 2.0  # nods (2.5-4 degrees each)
    # the glance: A's eyes turn toward the image's right (the subject's left: eyeLookOutLeft), B's toward
    # the image's left while it listens to A (eyeLookOutRight)
    assert a.channel("eyeLookOutLeft")[span].max() > 0.1
    b = result.tracks["B"]
    assert b.channel("eyeLookOutRight")[spoken_frames(result.turns[0])].max() > 0.1
    assert set(result.tracks) == {"A", "B"} and all(len(t.weights[0]) == len(ARKIT_52) for t in result.tracks.values())


def test_the_captions_name_the_speakers_in_turn(dialogue) -> None:
    result, _ = dialogue
    for cue in result.cues:
        turn = next(t for t in result.turns if t.start - 1e-3 <= cue.start < t.end)
        assert cue.text.startswith(f"{turn.speaker}: ")
        assert cue.end <= result.turns[result.turns.index(turn) + 1].start + 1e-3 if turn is not result.turns[-1] \
            else cue.end <= result.duration + 1e-3
    said = " ".join(c.text.split(": ", 1)[1] for c in result.cues)
    assert "launch this morning?" in said and "the whole building shook." in said
    assert [c.text.split(":")[0] for c in result.cues][-1] == "A"


def test_stacked_puts_the_faces_one_above_the_other_in_9_16(tmp_path) -> None:
    out = tmp_path / "stacked.mp4"
    request = DialogueRequest(script="B: Yes.", cast=(CastMember("A", ASTRONAUT.read_bytes()),
                                                      CastMember("B", GRACE.read_bytes(), voice="joe")),
                              layout="stacked", size=256)
    result = DialoguePipeline().generate(request, out)
    assert "cast: A never speaks (only listens)" in result.warnings
    frame = next(iter(decode_frames(out)))
    assert frame.shape == (456, 256, 3)
    # Grace Hopper's navy uniform and flag: the bottom panel is bluer than the astronaut's above
    top, bottom = frame[:228].astype(float), frame[228:].astype(float)
    assert (bottom[..., 2] - bottom[..., 0]).mean() > (top[..., 2] - top[..., 0]).mean() + 20
    assert result.tracks["A"].channel("jawOpen").max() < 0.02


def test_the_dialogue_script_is_read_turn_by_turn() -> None:
    turns = parse_dialogue("# a comment\nA: Hello [pause 1] there.\n\nB: Time: five o'clock,\nsharp.\n")
    assert [(t.speaker, t.text, t.line) for t in turns] == [
        ("A", "Hello [pause 1] there.", 2), ("B", "Time: five o'clock, sharp.", 4)]


def test_a_cast_file_names_each_speakers_photo_and_voice_relative_to_itself(tmp_path) -> None:
    (tmp_path / "a.png").write_bytes(ASTRONAUT.read_bytes())
    (tmp_path / "cast.json").write_text(json.dumps({"A": {"photo": "a.png", "voice": "joe"},
                                                    "B": {"photo": str(GRACE)}}))
    a, b = read_cast([str(tmp_path / "cast.json")])
    assert (a.name, a.photo, a.voice, b.name, b.photo, b.voice) == ("A", ASTRONAUT.read_bytes(), "joe",
                                                                    "B", GRACE.read_bytes(), "")
    with pytest.raises(InputError) as refused:
        read_cast([f"A={GRACE}:speed=2"])
    assert refused.value.field == "cast"
    with pytest.raises(InputError) as refused:
        read_cast([f"A={tmp_path / 'nobody.png'}"])
    assert refused.value.field == "cast.A.photo"


def cli(tmp_path, monkeypatch, capsys, script: str, *args: str) -> tuple[int, str]:
    monkeypatch.setenv("LIKENESS_VERBOSE", "1")  # (stderr stays Python's: capsys reads the one line)
    path = tmp_path / "talk.txt"
    path.write_text(script)
    out = tmp_path / "out.mp4"
    try:
        code = main(["generate", "--dialogue", str(path), *args, "--size", "256", "--out", str(out)])
    except SystemExit as exited:  # (a value outside an option's choices: refused by the parser, the same way)
        code = exited.code
    assert not out.exists()
    return code, capsys.readouterr().err


@pytest.mark.parametrize("script, args, expected", [
    ("A: Hi.\nC: Who am I?", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={GRACE}"),
     "error: dialogue: line 2: C has no cast entry (cast: A, B)"),
    ("A: Hi.\nB: Hello.", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={ASTRONAUT}"),
     "error: cast.B.photo: is A's photo too"),
    ("A: Hi.", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={GRACE}", "--layout", "grid"),
     "error: layout: unknown layout 'grid'; supported: side-by-side, stacked"),
    ("A: Hi.", ("--cast", f"A={ASTRONAUT}:voice=bob", "--cast", f"B={GRACE}"),
     "error: cast.A.voice: unknown voice 'bob'"),
    ("A: Hi.\nB: [pause 1]", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={GRACE}"),
     "error: dialogue: line 2: has nothing to say but tags"),
    ("Hi.", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={GRACE}"),
     "error: dialogue: line 1: expected 'NAME: text'"),
    ("A: Hi.", ("--cast", f"A={ASTRONAUT}",), "error: cast: a dialogue's layouts take 2 faces"),
    ("A: Hi.", ("--cast", f"A={ASTRONAUT}", "--cast", f"B={GRACE}", "--photo", str(GRACE)),
     "error: photo: goes with a single face"),
])
def test_bad_dialogue_input_exits_2_in_one_line_naming_the_field(tmp_path, monkeypatch, capsys, script, args,
                                                                  expected) -> None:
    code, err = cli(tmp_path, monkeypatch, capsys, script, *args)
    assert code == 2
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_a_photo_with_no_face_names_its_cast_member_and_a_silent_member_is_a_warning(tmp_path, monkeypatch,
                                                                                        capsys) -> None:
    code, err = cli(tmp_path, monkeypatch, capsys, "A: Hi.", "--cast", f"A={GRACE}", "--cast", f"B={CAT}")
    assert code == 2
    lines = err.splitlines()
    assert lines[0] == "warning: cast: B never speaks (only listens)"
    assert lines[1].startswith("error: cast.B.photo: no face found") and len(lines) == 2, err
