"""Faces no detector finds (user keypoints + template fit) and photo pose: three-quarter photos
work, extreme poses are refused with a clear message."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from services.common.domain.arkit import INDEX, weights
from services.common.domain.errors import InputError
from services.render.keypoints import (fit_template, parse_keypoints, template_keypoints,
                                       validate_keypoints)
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import build_rig, detect_faces, photo_pose
from services.render.template_face import template_mesh

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"
# Chelsea the cat (assets/photos/cat.png): eyes, nose tip, mouth corners, marked by hand.
CAT_KEYPOINTS = parse_keypoints(PHOTOS / "cat.keypoints.json")


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return load_photo(PHOTOS / "grace_hopper.jpg")


def test_parse_forms(tmp_path):
    text = "170,112; 317,137; 262,240; 238,272; 292,276"
    assert np.allclose(parse_keypoints(text), CAT_KEYPOINTS)
    assert np.allclose(parse_keypoints(json.dumps(CAT_KEYPOINTS.tolist())), CAT_KEYPOINTS)
    path = tmp_path / "kp.json"
    path.write_text(json.dumps({"keypoints": CAT_KEYPOINTS.tolist()}))
    assert np.allclose(parse_keypoints(str(path)), CAT_KEYPOINTS)
    for bad in ("1,2;x,4", "[1, 2", str(tmp_path / "missing.json")):
        with pytest.raises(InputError) as err:
            parse_keypoints(bad)
        assert err.value.field == "keypoints"


@pytest.mark.parametrize("points, message", [
    (CAT_KEYPOINTS[:4], "need 5 points"),
    (CAT_KEYPOINTS[[1, 0, 2, 3, 4]], "eye on the image left first"),
    (CAT_KEYPOINTS[[0, 1, 2, 4, 3]], "mouth corner on the image left first"),
    (np.array([[170, 112], [317, 137], [262, 60], [238, 272], [292, 276]], float), "nose tip must be below"),
    (np.array([[170, 112], [317, 137], [262, 240], [238, 200], [292, 200]], float), "below the nose"),
    (np.array([[170, 112], [172, 113], [171, 140], [165, 150], [175, 150]], float), "apart"),
    (CAT_KEYPOINTS + [[0, 0], [0, 0], [0, 0], [0, 0], [300, 0]], "outside the 451x300 photo"),
    (np.where(np.eye(5, 2, dtype=bool), np.nan, CAT_KEYPOINTS), "finite"),
])
def test_keypoint_validation(points, message):
    with pytest.raises(InputError, match=message) as err:
        validate_keypoints(points, (300, 451, 3))
    assert err.value.field == "keypoints"


def test_template_fit_lands_on_the_points_and_recovers_a_real_mesh(grace):
    # Exact at the five points.
    fitted = fit_template(CAT_KEYPOINTS)
    assert np.abs(template_keypoints(fitted) - CAT_KEYPOINTS).max() < 0.01
    # Keypoints taken from a real detected mesh: the fitted template lies close to that mesh.
    mesh = detect_faces(grace)[0]
    points = template_keypoints(mesh)
    fitted = fit_template(validate_keypoints(points, grace.shape))
    face_h = np.linalg.norm(mesh[10, :2] - mesh[152, :2])
    err = np.linalg.norm(fitted[:468, :2] - mesh[:468, :2], axis=1) / face_h
    assert np.median(err) < 0.04 and np.percentile(err, 95) < 0.1
    assert np.allclose(template_mesh()[468, 0], -0.5) and np.allclose(template_mesh()[473, 0], 0.5)


def test_cat_with_keypoints_talks():
    cat = load_photo(PHOTOS / "cat.png")
    with pytest.raises(InputError, match="keypoints"):
        build_rig(cat)  # no detector finds a cat: the message says what to do
    rig = build_rig(cat, keypoints=CAT_KEYPOINTS)
    assert rig.source == "keypoints" and any("keypoints" in w for w in rig.warnings)
    renderer = Renderer(rig)
    rest = renderer.render(weights(), np.zeros(6))
    opened = renderer.render(weights(jawOpen=0.6), np.zeros(6))
    lm = rig.landmarks
    diff = np.abs(opened.astype(int) - rest.astype(int)).max(axis=2) > 30
    ys, xs = np.nonzero(diff)
    mouth = lm[[61, 291, 13, 14], :2].mean(axis=0)
    eye_dist = np.linalg.norm(lm[468, :2] - lm[473, :2])
    # The change is around the mouth (below the nose), not elsewhere on the face.
    assert diff.sum() > 200
    assert np.median(np.hypot(xs - mouth[0], ys - mouth[1])) < 0.6 * eye_dist
    # The gaze stays put (the iris size is unknown).
    assert np.array_equal(renderer.render(weights(eyeLookUpLeft=1, eyeLookUpRight=1), np.zeros(6)), rest)


def _eye_masks(rig) -> np.ndarray:
    """Pixels inside either eye's outer lid ring (dilated a little), [H, W] bool."""
    import cv2

    from services.render.rig import LEFT_EYE, RIGHT_EYE

    mask = np.zeros(rig.image.shape[:2], np.uint8)
    for eye in (RIGHT_EYE, LEFT_EYE):
        corners = eye.ring_corners[1]
        ring = [corners[0], *eye.upper[2], corners[1], *eye.lower[2][::-1]]
        cv2.fillPoly(mask, [np.round(rig.landmarks[ring, :2]).astype(np.int32)], 1)
    return cv2.dilate(mask, np.ones((9, 9), np.uint8)) > 0


def _measured_eyes(rig) -> np.ndarray:
    """Pixels inside the eyes as measured around the pupil keypoints, [H, W] bool."""
    import cv2

    from services.render.keypoints import measure_eye

    lm = rig.landmarks
    mask = np.zeros(rig.image.shape[:2], np.uint8)
    for pupil in (468, 473):
        eye = measure_eye(rig.image, lm[pupil, :2], float(np.linalg.norm(lm[473, :2] - lm[468, :2])))
        assert eye is not None
        cv2.fillPoly(mask, [np.round(eye.boundary(128)).astype(np.int32)], 1)
    return mask > 0


def test_keypoint_eye_rings_stay_ordered_below_the_brow():
    """(The opening's size is measured from the photo: tests/test_keypoint_faces_look.py.)"""
    from services.render.rig import LEFT_EYE, RIGHT_EYE

    rig = build_rig(load_photo(PHOTOS / "cat.png"), keypoints=CAT_KEYPOINTS)
    lm = rig.landmarks[:, :2]
    iod = np.linalg.norm(lm[473] - lm[468])
    for eye in (RIGHT_EYE, LEFT_EYE):
        width = np.linalg.norm(lm[eye.corners[0]] - lm[eye.corners[1]])
        assert 0.3 < width / iod < 0.9
        # The lid rings stay outside the opening, the brow above the outer ring.
        top = [lm[eye.upper[r][3]] for r in range(3)]
        brow = lm[list(eye.brow_lower)]
        above = brow[np.argmin(np.abs(brow[:, 0] - top[2][0])), 1]
        assert top[0][1] > top[1][1] > top[2][1] > above


def test_cat_blinks():
    """Eye-region change follows the blink weight: none with open eyes (or while talking), a lid
    over most of each eye when shut, and nothing outside the eyes moves."""
    rig = build_rig(load_photo(PHOTOS / "cat.png"), keypoints=CAT_KEYPOINTS)
    renderer = Renderer(rig)
    eyes = _eye_masks(rig)
    rest = renderer.render(weights(), np.zeros(6)).astype(int)
    blink = np.array([0, 0, 0.3, 0.7, 1.0, 0.6, 0.2, 0, 0])
    talk = np.array([0.4, 0, 0.5, 0, 0.3, 0.6, 0, 0.2, 0.5])  # the jaw moves all along
    eye_change, elsewhere = [], []
    for b, j in zip(blink, talk):
        frame = renderer.render(weights(eyeBlinkLeft=b, eyeBlinkRight=b, jawOpen=j), np.zeros(6)).astype(int)
        talking = renderer.render(weights(jawOpen=j), np.zeros(6)).astype(int)
        changed = np.abs(frame - talking).max(axis=2) > 25  # what the blink itself changed
        eye_change.append(changed[eyes].mean())
        elsewhere.append(changed[~eyes].sum())
        if b == 0:
            assert np.array_equal(frame[eyes], rest[eyes])  # talking leaves the eyes alone
    eye_change = np.array(eye_change)
    assert np.all(eye_change[blink == 0] == 0)
    assert eye_change[blink == 1.0][0] > 0.25, eye_change  # the eye area around it (the rings) less so
    # Shut, the lid covers the eye itself: what is inside the eye measured in the photo changed.
    shut = renderer.render(weights(eyeBlinkLeft=1.0, eyeBlinkRight=1.0), np.zeros(6)).astype(int)
    covered = np.abs(shut - rest).max(axis=2) > 25
    inside = _measured_eyes(rig)
    assert covered[inside].mean() > 0.6, covered[inside].mean()
    assert np.corrcoef(blink, eye_change)[0, 1] > 0.9, eye_change
    assert max(elsewhere) < 0.02 * eyes.sum(), elsewhere


def _rotated(landmarks: np.ndarray, yaw_deg: float) -> np.ndarray:
    """A mesh turned by yaw about its own centre, depth included (as mediapipe would see it)."""
    a = np.radians(yaw_deg) * 0.75  # mediapipe's depth reads rotation at 0.75x (photo_pose)
    c = landmarks.mean(axis=0)
    rot = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    return (landmarks - c) @ rot.T + c


def test_extreme_pose_is_refused(grace):
    mesh = detect_faces(grace)[0]
    assert abs(photo_pose(mesh)[0]) < 5
    for yaw in (-65, 60):
        with pytest.raises(InputError, match="too extreme") as err:
            build_rig(grace, detect=lambda rgb, y=yaw: [_rotated(detect_faces(rgb)[0], y)])
        assert err.value.field == "photo" and ("left" in str(err.value) or "right" in str(err.value))
    rolled = np.asarray(grace[::-1].transpose(1, 0, 2)).copy()  # 90 degrees: lying on its side
    faces = detect_faces(rolled)
    if faces:  # mediapipe may or may not find it; if it does, the rig must refuse
        with pytest.raises(InputError, match="rolled"):
            build_rig(rolled)


def test_three_quarter_photo_is_measured_and_animates(grace):
    # A turned photo: the frontal portrait rendered 20 degrees to each side, then used as input.
    frontal = Renderer(build_rig(grace))
    for yaw in (-20, 20):
        turned = frontal.render(np.zeros(52), np.array([0, np.radians(yaw), 0, 0, 0, 0]))
        measured = photo_pose(detect_faces(turned)[0])[0]
        assert abs(measured - yaw) < 6 and np.sign(measured) == np.sign(yaw)
        rig = build_rig(turned)
        r = Renderer(rig)
        rest, opened = r.render(weights(), np.zeros(6)), r.render(weights(jawOpen=0.6), np.zeros(6))
        apertures = []
        for frame in (rest, opened):
            p = detect_faces(frame)[0]
            apertures.append(np.linalg.norm(p[13, :2] - p[14, :2]) / np.linalg.norm(p[10, :2] - p[152, :2]))
        assert apertures[1] > apertures[0] + 0.04


def test_cli_keypoints(tmp_path):
    base = [sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTOS / "cat.png"),
            "--script", "Meow.", "--size", "256"]
    bad = subprocess.run(base + ["--keypoints", "1,2;3,4", "--out", str(tmp_path / "c.mp4")],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: keypoints: need 5 points")
    kp = tmp_path / "kp.json"
    kp.write_text(json.dumps(CAT_KEYPOINTS.tolist()))
    ok = subprocess.run(base + ["--keypoints", str(kp), "--out", str(tmp_path / "c.mp4")],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "c.mp4").stat().st_size > 10000
