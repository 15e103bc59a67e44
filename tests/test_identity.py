"""Identity: the rendered face is still the person in the photo, by an independent instrument (dlib's
face-recognition ResNet, tests/identity_instrument.py), and the instrument tells two people apart.
The 60 s version on every bundled photo: benchmarks/identity.py."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.identity_instrument import SAME_PERSON, descriptors, distance, distances_to, photo_descriptor
from tests.video_instrument import decode

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT / "assets" / "photos"
SCRIPT = "Maybe Bob will pay me back. Please bring the big map, and open it wide! We looked everywhere."
SAME = 0.25  # the rendered face's median distance to its photo; the same person is < 0.6 to dlib


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> np.ndarray:
    """~6 s of grace_hopper.jpg speaking, at 512x512: the descriptors of every third frame."""
    out = tmp_path_factory.mktemp("identity") / "grace.mp4"
    proc = subprocess.run([sys.executable, "-m", "services.cli", "generate", "--photo", str(PHOTOS / "grace_hopper.jpg"),
                           "--script", SCRIPT, "--out", str(out), "--size", "512", "--seed", "7"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    frames = decode(out).frames
    assert len(frames) >= 5 * 25
    return descriptors(frames[::3], upsample=0)  # (the face is ~200 px: no upsampling needed)


def test_bundled_photos_are_two_people_to_the_instrument() -> None:
    grace, astronaut = photo_descriptor(PHOTOS / "grace_hopper.jpg"), photo_descriptor(PHOTOS / "astronaut.png")
    assert grace.shape == (128,) and distance(grace, astronaut) > SAME_PERSON


def test_rendered_face_keeps_the_photos_identity(rendered) -> None:
    near = distances_to(photo_descriptor(PHOTOS / "grace_hopper.jpg"), rendered)
    far = distances_to(photo_descriptor(PHOTOS / "astronaut.png"), rendered)
    assert not np.isnan(near).any(), "dlib lost the face in some frames"
    assert np.median(near) <= SAME, np.round(near, 3)
    assert np.max(near) < SAME_PERSON, np.round(near, 3)
    assert np.median(far) > SAME_PERSON, np.round(far, 3)  # the instrument discriminates
