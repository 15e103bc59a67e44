"""How faces placed from keypoints (the cat) look: eye openings measured around the actual eyes, lids
that taper into the eye corners, and an open mouth without human teeth (while a photo with a detected
mesh keeps its drawn teeth)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from services.render.keypoints import fit_template, lid_profile, measure_eye, shape_eyes
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import LEFT_EYE, LIP_LOWER_INNER, LIP_UPPER_INNER, RIGHT_EYE, build_rig
from tests.test_keypoints import CAT_KEYPOINTS, PHOTOS, weights  # Chelsea the cat, marked by hand


@pytest.fixture(scope="module")
def cat() -> Renderer:
    return Renderer(build_rig(load_photo(PHOTOS / "cat.png"), keypoints=CAT_KEYPOINTS))


def _slopes(points: np.ndarray) -> np.ndarray:
    """|rise / run| of each segment of a polyline, measured against its end-to-end line."""
    across = (points[-1] - points[0]) / np.linalg.norm(points[-1] - points[0])
    normal = np.array([-across[1], across[0]])
    d = np.diff(points, axis=0)
    return np.abs(d @ normal) / np.maximum(np.abs(d @ across), 1e-6)


def test_lid_profile_tapers_to_the_corners():
    x = np.linspace(-1, 1, 201)
    f = lid_profile(x)
    assert f[100] == 1.0 and f[0] == 0.0 and f[-1] == 0.0
    assert np.all(np.diff(f[100:]) < 0) and np.allclose(f, f[::-1])  # monotone, symmetric
    # Finite slope at the corners (an ellipse's is infinite: the lid would drop straight down).
    assert abs(np.diff(f[-2:])[0]) / (x[1] - x[0]) < 3.0


def test_closed_lid_line_meets_the_corners_gently(cat):
    """Shut, the lid line (upper margin on the lower one) slopes at most ~1 into each corner: a lid
    line that drops steeply at the corner shows as a hard step beside the nose (it was 2.7)."""
    posed = cat.pose_mesh(weights(eyeBlinkLeft=1.0, eyeBlinkRight=1.0), np.zeros(6))
    for eye in (RIGHT_EYE, LEFT_EYE):
        line = posed[[eye.corners[0], *eye.upper[0], eye.corners[1]]]
        slopes = _slopes(line)
        assert slopes.max() < 1.4, slopes
        # Shut, with the eye covered: the margins met (the contact clamp), the line sags inward.
        lower = posed[[eye.corners[0], *eye.lower[0], eye.corners[1]]]
        assert np.abs(line - lower).max() < 1.0


def _tooth_coloured(frame: np.ndarray, polygon: np.ndarray) -> tuple[int, int]:
    """(pixels inside the mouth polygon, of them bright and greyish like teeth)."""
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
    mask = cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0  # not the feathered lip edge
    px = frame[mask].astype(float)
    luma = px @ np.array([0.299, 0.587, 0.114])
    sat = (px.max(axis=1) - px.min(axis=1)) / np.maximum(px.max(axis=1), 1.0)
    return int(mask.sum()), int(np.sum((luma > 140) & (sat < 0.4)))


def _open_mouth(renderer: Renderer, jaw: float) -> tuple[int, int]:
    w = weights(jawOpen=jaw)
    posed = renderer.pose_mesh(w, np.zeros(6))
    polygon = np.concatenate([posed[list(LIP_UPPER_INNER)], posed[list(LIP_LOWER_INNER)][::-1]])
    return _tooth_coloured(renderer.render(w, np.zeros(6)), polygon)


def test_keypoint_face_open_mouth_has_no_human_teeth(cat):
    grace = Renderer(build_rig(load_photo(PHOTOS / "grace_hopper.jpg")))
    for jaw in (0.5, 0.9):
        area, teeth = _open_mouth(cat, jaw)
        assert area > 150, area  # the cat's mouth does open
        assert teeth <= 0.01 * area, (jaw, area, teeth)
        area, teeth = _open_mouth(grace, jaw)  # a detected mesh keeps its drawn teeth
        assert teeth > 0.1 * area, (jaw, area, teeth)
    # Dark throat above a redder tongue: the opening's lower part is redder than its upper part.
    w = weights(jawOpen=0.9)
    posed, frame = cat.pose_mesh(w, np.zeros(6)), cat.render(w, np.zeros(6)).astype(float)
    top, bottom = posed[13], posed[14]  # inner lip midpoints
    x = int(round((top[0] + bottom[0]) / 2))
    col = frame[int(top[1]) + 2:int(bottom[1]) - 1, x]
    redness = col[:, 0] - col[:, 1]
    third = len(col) // 3
    assert col[:third].mean() < 70  # the throat is dark
    assert redness[-third:].mean() > redness[:third].mean() + 10


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(float) @ np.array([0.299, 0.587, 0.114])


def test_cat_eye_opening_is_measured_around_the_actual_eye():
    """The measured ellipse holds the pupil and iris pixels of the photo and leaves out the light fur
    beside the nose; the lid margin of the shaped mesh holds the ellipse."""
    photo = load_photo(PHOTOS / "cat.png")
    iod = float(np.linalg.norm(CAT_KEYPOINTS[1] - CAT_KEYPOINTS[0]))
    yy, xx = np.mgrid[:photo.shape[0], :photo.shape[1]]
    pixels = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
    luma = _luma(photo).ravel()
    hsv = cv2.cvtColor(photo, cv2.COLOR_RGB2HSV).reshape(-1, 3).astype(float)  # fur: hue 12-16
    # Fur beside the nose, next to each eye's inner side (looked up on the photo).
    beside_nose = {0: np.array([[222.0, 125.0], [218.0, 140.0]]), 1: np.array([[280.0, 140.0], [284.0, 128.0]])}
    eyes = []
    for i, kp in enumerate(CAT_KEYPOINTS[:2]):
        eye = measure_eye(photo, kp, iod)
        assert eye is not None
        near = np.hypot(*(pixels - kp).T)
        pupil = (near < 0.15 * iod) & (luma < 40)
        iris = (near < 0.3 * iod) & (hsv[:, 0] >= 18) & (hsv[:, 1] > 64) & (luma > 50)  # yellow-green
        assert pupil.sum() > 50 and iris.sum() > 300, (pupil.sum(), iris.sum())
        assert eye.contains(pixels[pupil]).mean() > 0.99
        assert eye.contains(pixels[iris]).mean() > 0.97, eye.contains(pixels[iris]).mean()
        assert not eye.contains(beside_nose[i]).any()
        # Not the fixed 0.5 x eye distance: the image-right eye is narrower, the image-left wider.
        eyes.append(eye.extents(np.array([1.0, 0.0]))[0] * 2 / iod)
    assert eyes[1] < 0.4 < 0.5 < eyes[0], eyes
    shaped = shape_eyes(fit_template(CAT_KEYPOINTS), photo)
    for eye, kp in zip((RIGHT_EYE, LEFT_EYE), CAT_KEYPOINTS[:2]):
        margin = shaped[[eye.corners[0], *eye.upper[0], eye.corners[1], *eye.lower[0][::-1]], :2]
        ellipse = measure_eye(photo, kp, iod)
        inside = [cv2.pointPolygonTest(margin.astype(np.float32), (float(x), float(y)), True)
                  for x, y in ellipse.boundary(48)]
        assert min(inside) > -1.0, min(inside)  # (the margin is a 16-point polygon: chords)
        assert np.allclose(shaped[eye.iris[0], :2], kp)  # the pupil stays on its keypoint


def test_eye_measurement_falls_back_on_flat_colour():
    flat = np.full((300, 451, 3), (196, 150, 112), np.uint8)
    noisy = np.clip(flat + np.random.default_rng(0).normal(0, 8, flat.shape), 0, 255).astype(np.uint8)
    iod = float(np.linalg.norm(CAT_KEYPOINTS[1] - CAT_KEYPOINTS[0]))
    fitted = fit_template(CAT_KEYPOINTS)
    for image in (flat, noisy):
        assert measure_eye(image, CAT_KEYPOINTS[0], iod) is None
        assert np.array_equal(shape_eyes(fitted, image), shape_eyes(fitted))  # fixed proportions
    # A keypoint on the cat's fur (forehead), not on an eye: no eye there either.
    assert measure_eye(load_photo(PHOTOS / "cat.png"), np.array([245.0, 60.0]), iod) is None


def test_cartoon_eyes_are_measured():
    """Flat-painted cartoon eyes (white, outlined, a black pupil off centre) of different sizes."""
    image = np.full((400, 400, 3), (240, 200, 160), np.uint8)
    drawn = [((130, 170), (34, 26)), ((270, 170), (24, 30))]  # centre, half-axes
    for (cx, cy), axes in drawn:
        cv2.ellipse(image, (cx, cy), axes, 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.ellipse(image, (cx, cy), axes, 0, 0, 360, (20, 20, 20), 2, cv2.LINE_AA)
        cv2.circle(image, (cx + 5, cy + 3), 9, (10, 10, 10), -1, cv2.LINE_AA)
    for (cx, cy), (ax, ay) in drawn:
        eye = measure_eye(image, np.array([cx + 5.0, cy + 3.0]), 140.0)
        assert eye is not None
        half_w, half_h = eye.extents(np.array([1.0, 0.0]))
        assert np.hypot(eye.centre[0] - cx, eye.centre[1] - cy) < 3, eye
        assert ax <= half_w < 1.25 * ax and ay <= half_h < 1.25 * ay, (eye, ax, ay)
