"""Directed motions: motion tags in a script ("[nod]", "[look left]") -> time-coded motions -> laid
over the model's frames (services.expression.motions), whole clips and live streams alike."""
from __future__ import annotations

import numpy as np
import pytest

from services.common.domain.arkit import INDEX
from services.common.domain.errors import InputError
from services.common.domain.expression_track import ExpressionTrack
from services.common.script.tags import (MOTION_LEAD_S, EmotionTag, MotionTag, strip_tags, timed_emotions,
                                         timed_motions)
from services.common.domain.speech import Word
from services.expression.motions import MAX_HEAD_DEG, MOTIONS, apply_motions, overlay

FPS = 25.0


def still(seconds: float = 4.0, pose_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> ExpressionTrack:
    n = int(seconds * FPS)
    pose = np.zeros((n, 6))
    pose[:, :3] = np.radians(pose_deg)
    return ExpressionTrack(FPS, np.zeros((n, 52)), pose)


def degrees(track: ExpressionTrack, axis: int) -> np.ndarray:
    return np.degrees(track.head_pose[:, axis].astype(np.float64))


# ------------------------------------------------------------------------------------ tags


def test_motion_tags_are_taken_out_of_the_script_with_their_offsets() -> None:
    text, tags = strip_tags("[happy] Yes. [nod] We did it. [look left 0.5] Over there. [tilt-right] [wink_left] "
                            "Right? [RAISE  brows] Wow. [looking left] stays.")
    assert text == "Yes. We did it. Over there. Right? Wow. [looking left] stays."
    assert tags[0] == EmotionTag(0, "happy", 1.0)
    motions = [t for t in tags if isinstance(t, MotionTag)]
    assert [(t.motion, t.strength) for t in motions] == [
        ("nod", 1.0), ("look_left", 0.5), ("tilt_right", 1.0), ("wink_left", 1.0), ("raise_brows", 1.0)]
    assert [text[t.offset:].split()[0] for t in motions] == ["We", "Over", "Right?", "Right?", "Wow."]
    with pytest.raises(InputError) as info:
        strip_tags("Sure. [nod 2] Yes.", "script")
    assert info.value.field == "script" and "[nod 2]" in info.value.message


def test_a_motion_starts_just_before_its_word_or_as_the_last_word_ends() -> None:
    text, tags = strip_tags("[happy] Yes. [nod] We did it. [shake]")
    words = [Word("Yes.", 0.1, 0.5), Word("We", 0.9, 1.1), Word("did", 1.1, 1.3), Word("it.", 1.3, 1.7)]
    assert timed_motions(tags, words, text) == [(0.9 - MOTION_LEAD_S, "nod", 1.0), (1.7, "shake", 1.0)]
    assert timed_emotions(tags, words, text) == [(0.0, "happy", 1.0)]  # each kind to its own stage


# --------------------------------------------------------------------------------- overlay


def test_each_motion_moves_what_it_names_and_only_around_its_time() -> None:
    base = still()
    start = 1.0
    moved = {name: apply_motions(base, [(start, name, 1.0)]) for name in MOTIONS}
    t = np.arange(len(base)) / FPS
    for name, track in moved.items():
        changed = np.flatnonzero(np.any(track.weights != base.weights, axis=1)
                                 | np.any(track.head_pose != base.head_pose, axis=1))
        assert len(changed) and t[changed[0]] >= start and t[changed[-1]] < start + 2.0, name
    nod = degrees(moved["nod"], 0)  # pitch > 0: chin down
    assert 6.5 < nod.max() < 7.5 and abs(t[nod.argmax()] - (start + 0.22)) < 0.05
    assert np.abs(degrees(moved["nod"], 1)).max() == 0
    shake = degrees(moved["shake"], 1)
    assert 6 < np.abs(shake).max() <= 8 and np.sum(np.diff(np.sign(shake[np.abs(shake) > 1])) != 0) >= 3
    assert degrees(moved["tilt_left"], 2).max() > 7.5 and degrees(moved["tilt_right"], 2).min() < -7.5
    for name, axis, sign in (("look_left", 1, 1), ("look_right", 1, -1), ("look_up", 0, -1), ("look_down", 0, 1)):
        turned = sign * degrees(moved[name], axis)  # yaw > 0: toward the image right (the subject's left)
        assert 6.5 < turned.max() <= 10.5 and turned.min() >= 0, name
    w = {name: track.weights for name, track in moved.items()}
    assert w["wink_left"][:, INDEX["eyeBlinkLeft"]].max() == 1 and w["wink_left"][:, INDEX["eyeBlinkRight"]].max() == 0
    assert w["wink_right"][:, INDEX["eyeBlinkRight"]].max() == 1 and w["wink_right"][:, INDEX["eyeBlinkLeft"]].max() == 0
    assert w["raise_brows"][:, INDEX["browInnerUp"]].max() == pytest.approx(0.75)
    half = apply_motions(base, [(start, "nod", 0.5)])
    np.testing.assert_allclose(degrees(half, 0), 0.5 * nod, atol=1e-4)


def test_the_eyes_hold_the_camera_while_the_head_moves_and_lead_it_when_looking_aside() -> None:
    base = still()
    times = np.arange(len(base)) / FPS
    for name in ("nod", "shake", "tilt_left"):  # eye rotation cancels the head's: gaze stays on the camera
        pose, gaze, _ = overlay(times, [(1.0, name, 1.0)])
        np.testing.assert_allclose(gaze[:, 0], -pose[:, 1])
        np.testing.assert_allclose(gaze[:, 1], pose[:, 0])
    track = apply_motions(base, [(1.0, "look_left", 1.0)])
    eyes = track.weights[:, INDEX["eyeLookOutLeft"]]  # toward the subject's left: left eye out, right eye in
    np.testing.assert_allclose(eyes, track.weights[:, INDEX["eyeLookInRight"]])
    # (coming back the eyes are on the camera first and hold it while the head turns back)
    assert track.weights[:int(2.25 * FPS), INDEX["eyeLookInLeft"]].max() == 0
    assert track.weights[int(2.5 * FPS):int(3.0 * FPS), INDEX["eyeLookInLeft"]].max() > 0
    head = degrees(track, 1)
    first_eyes, first_head = np.argmax(eyes > 0.2), np.argmax(head > 2.0)
    assert first_eyes < first_head  # the eyes go first
    hold = slice(int(1.8 * FPS), int(2.1 * FPS))  # held: eyes in the head + head = 22 degrees aside
    np.testing.assert_allclose(np.degrees(eyes[hold] * 0.6) + head[hold], 22.0, atol=0.5)


def test_motions_keep_the_head_within_its_limit_and_leave_other_frames_alone() -> None:
    base = still(pose_deg=(4.0, 8.0, 0.0))
    piled = apply_motions(base, [(1.0, "look_left", 1.0), (1.1, "shake", 1.0), (1.2, "nod", 1.0)])
    assert np.abs(degrees(piled, 1)).max() <= MAX_HEAD_DEG + 1e-4
    np.testing.assert_array_equal(piled.head_pose[:int(FPS)], base.head_pose[:int(FPS)])
    np.testing.assert_array_equal(piled.head_pose[int(3.5 * FPS):], base.head_pose[int(3.5 * FPS):])
    # a live stream's later frames: the same motion laid over frames starting at 2 s
    later = apply_motions(still(2.0), [(2.5, "nod", 1.0)], start_s=2.0)
    whole = apply_motions(still(4.0), [(2.5, "nod", 1.0)])
    np.testing.assert_array_equal(later.head_pose, whole.head_pose[int(2 * FPS):])
    with pytest.raises(ValueError):
        overlay(np.arange(10) / FPS, [(0.0, "moonwalk", 1.0)])


# ------------------------------------------------------------------------------------ live


def test_a_motion_sent_during_a_live_stream_shapes_the_frames_after_it() -> None:
    from services.common.infra.inference import InProcessClient
    from services.expression.diffusion.live import LiveAnimator
    from services.tts.engine import TextToSpeech

    speech = TextToSpeech().synthesize("We looked everywhere for the keys. Then we found them by the door.", seed=2)
    step = int(0.02 * speech.sample_rate)

    def run(motion: bool) -> np.ndarray:
        live = LiveAnimator(InProcessClient(), speech.sample_rate, fps=FPS, seed=4)
        poses, sent = [], False
        for i in range(0, len(speech.audio), step):
            live.push_audio(speech.audio[i:i + step])
            if motion and not sent and live.features.duration >= 1.5:  # frames before ~1 s are out already
                live.push_motion(2.0, "look_left", 1.0)
                sent = True
            poses.append(live.take()[1])
        live.end()
        poses.append(live.take()[1])
        return np.concatenate(poses)

    plain, looked = run(False), run(True)
    t = np.arange(len(plain)) / FPS
    pose_add, _, _ = overlay(t, [(2.0, "look_left", 1.0)])
    np.testing.assert_allclose(looked[:, 1] - plain[:, 1], pose_add[:, 1], atol=1e-5)
    assert np.degrees(looked[int(3.0 * FPS), 1] - plain[int(3.0 * FPS), 1]) > 9
    with pytest.raises(InputError):
        LiveAnimator(InProcessClient(), 16000).push_motion(1.0, "moonwalk")


# ------------------------------------------------------------------------- end of a script


def test_a_motion_after_the_last_words_gets_the_silence_it_needs() -> None:
    from services.expression.motions import SECONDS
    from services.pipeline import EmbeddedPipeline, VideoRequest
    from services.pipeline.speech_rules import check_speech

    checked = check_speech("Thanks for watching! [wink left]", recording=False, cloned=False)
    assert checked.text == "Thanks for watching! [pause 0.50]" and not checked.violations
    assert check_speech("Thanks! [nod] [pause 2]", recording=False, cloned=False).text == "Thanks! [pause 2]"
    assert check_speech("[nod] Thanks!", recording=False, cloned=False).text == "Thanks!"
    assert check_speech("Thanks! [nod]", recording=True, cloned=False).text == "Thanks!"  # a recording: its own length
    assert check_speech("[nod]", recording=False, cloned=False).violations == [("script", "has nothing to say but tags")]
    request = VideoRequest(photo=b"", script="Thanks for watching! [look left]", seed=1)
    speech, _ = EmbeddedPipeline().speech(request)
    track = EmbeddedPipeline().expression(speech, request)
    last = speech.words[-1]
    assert speech.duration >= last.end + SECONDS["look_left"]
    yaw = np.degrees(track.head_pose[:, 1])
    assert yaw[int((last.end + 1.0) * FPS)] > yaw[:int(last.end * FPS)].max() + 6  # seen, not cut off


# ---------------------------------------------------------------------------- auto motions


def test_auto_motions_nod_on_yes_shake_on_no_and_tilt_on_questions() -> None:
    from services.common.script.auto_motion import with_auto_motions

    text, tags = strip_tags("Yes, that is right. No, we never said that. Could you check again? Of course not! "
                            "Rightly so. Okay. [wink left] Is that all for today then? Sure.")
    motions = [(text[t.offset:].split()[0], t.motion, t.strength) for t in with_auto_motions(text, tags)
               if isinstance(t, MotionTag)]
    assert motions == [("Yes,", "nod", 0.7), ("No,", "shake", 0.6), ("Could", "tilt_left", 0.5),
                       ("Of", "shake", 0.6),  # "of course not" is a no
                       ("Is", "wink_left", 1.0),  # the writer's own motion: nothing added in its sentence
                       ("Sure.", "nod", 0.7)]
    close = with_auto_motions("Yes. No. Sure.", [])  # one motion, then quiet until it is over
    assert [(t.offset, t.motion) for t in close] == [(0, "nod")]


def test_auto_motions_move_the_head_in_process_and_need_words() -> None:
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    script = "The report is ready for you today. Yes, it is finished. No, it is not late."
    auto = VideoRequest(photo=b"x", script=script, auto_motions=True, seed=2)
    speech, _ = pipeline.speech(auto)
    moved, plain = pipeline.expression(speech, auto), pipeline.expression(speech, VideoRequest(photo=b"x", script=script,
                                                                                              seed=2))
    extra = np.degrees(moved.head_pose[:, :3] - plain.head_pose[:, :3])
    yes = next(w for w in speech.words if w.text.startswith("Yes")).start
    no = next(w for w in speech.words if w.text.startswith("No")).start
    t = np.arange(len(moved)) / moved.fps
    assert np.abs(extra[t < yes - 0.2]).max() < 1e-3  # nothing before the first cue
    nod = extra[(t >= yes - 0.1) & (t < yes + 0.8)]
    assert nod[:, 0].max() > 4 and np.abs(nod[:, 1]).max() < 1e-3
    shake = extra[(t >= no - 0.1) & (t < no + 1.1), 1]
    assert shake.max() > 3 and shake.min() < -3
    with pytest.raises(InputError) as info:  # from audio there are no words to read
        pipeline.live(auto, iter([np.zeros(1600, np.float32)]), 16000, lambda data: None)
    assert info.value.field == "auto_motions"


def test_time_coded_motions_and_emotions_go_with_a_request() -> None:
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=b"x", script="We will see what happens next week.", seed=1,
                           motions=((0.5, "tilt_right", 1.0),), emotions=((0.0, "happy", 1.0),))
    request.validate()
    speech, _ = pipeline.speech(request)
    track, plain = pipeline.expression(speech, request), pipeline.expression(
        speech, VideoRequest(photo=b"x", script=request.script, seed=1))
    roll = np.degrees(track.head_pose[:, 2] - plain.head_pose[:, 2])
    assert roll[int(1.2 * FPS)] < -7.5 and np.abs(roll[:int(0.5 * FPS)]).max() < 1e-3
    assert track.weights[:, INDEX["mouthSmileLeft"]].mean() > plain.weights[:, INDEX["mouthSmileLeft"]].mean() + 0.1
    for bad, field in ((dict(motions=((1.0, "moonwalk", 1.0),)), "motions[0].motion"),  # (as the API names it)
                       (dict(motions=((-1.0, "nod", 1.0),)), "motions[0].time_code"),
                       (dict(emotions=((1.0, "happy", 2.0),)), "emotions[0].strength")):
        with pytest.raises(InputError) as info:
            VideoRequest(photo=b"x", script="Hi.", **bad).validate()
        assert info.value.field == field


def test_the_cli_takes_time_coded_motions_and_emotions(tmp_path) -> None:
    """`likeness generate --motion 0.5:'tilt right' --emotion-at 0:happy`: in the exported track the head
    tilts after 0.5 s and the face smiles; bad values are one-line errors (exit 2) naming the option."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    photo = root / "assets/photos/grace_hopper.jpg"

    def run(*extra: str, command: str = "generate") -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", command, "--photo", str(photo), *extra],
                              cwd=root, capture_output=True, text=True, timeout=300)

    tracks = []
    for extra in ([], ["--motion", "0.5:tilt right", "--emotion-at", "0:happy"]):
        track = tmp_path / f"track{len(tracks)}.json"
        done = run("--script", "We will see what happens next week.", "--size", "128", "--seed", "1",
                   "--out", str(tmp_path / "v.mp4"), "--export-blendshapes", str(track), *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        tracks.append(ExpressionTrack.from_json(track.read_text()))
    plain, directed = tracks
    roll = np.degrees(directed.head_pose[:, 2] - plain.head_pose[:, 2])
    assert roll[int(1.2 * FPS)] < -7.5 and np.abs(roll[:int(0.5 * FPS)]).max() < 1e-3
    smile = INDEX["mouthSmileLeft"]
    assert directed.weights[:, smile].mean() > plain.weights[:, smile].mean() + 0.1
    for extra, expected in ((["--script", "Hi.", "--motion", "nod"], "error: motion: 'nod': expected SECONDS:NAME"),
                            (["--script", "Hi.", "--motion", "1:moonwalk"], "error: motion: '1:moonwalk': unknown"),
                            (["--script", "Hi.", "--emotion-at", "1:happy:3"], "error: emotion-at: '1:happy:3': must"),
                            (["--text-in", "-", "--motion", "1:nod"], "error: motion: goes with --audio-in")):
        bad = run(*extra, "--out", str(tmp_path / "bad.mp4"), command="live" if "--text-in" in extra else "generate")
        assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(expected), bad.stderr[-500:]
