"""The picture's style (services/render/style.py), and the lids and mouth drawn in it."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks.render import stylize
from services.render.keypoints import parse_keypoints
from services.render.photo import load_photo
from services.render.rig import FaceRig, build_rig
from tests.style_pictures import PHOTOS, style_set


@pytest.fixture(scope="module")
def styled() -> list[dict]:
    out = []
    for entry in style_set():
        out.append({**entry, "rig": build_rig(entry["image"], keypoints=entry["keypoints"])})
    return out


@pytest.mark.parametrize("name, keypoints", [("astronaut.png", None), ("grace_hopper.jpg", None),
                                             ("cat.png", "cat.keypoints.json")])
def test_bundled_photos_are_photos(name, keypoints):
    kp = parse_keypoints(PHOTOS / keypoints) if keypoints else None
    rig = build_rig(load_photo(PHOTOS / name), keypoints=kp)
    assert rig.style == "photo"
    assert FaceRig.from_bytes(rig.to_bytes()).style == "photo"


def test_drawings_are_classified_by_style(styled):
    got = {e["name"]: e["rig"].style for e in styled}
    want = {e["name"]: e["style"] for e in styled}
    assert got == want
    assert {e["style"] for e in styled} == {"flat", "inked", "painted"}
    rig = styled[0]["rig"]
    assert FaceRig.from_bytes(rig.to_bytes()).style == rig.style


def test_benchmark_illustration_stays_inked():
    """The benchmark's stylized astronaut: inked, as mouth.py measured it before the style existed."""
    rig = build_rig(stylize(load_photo(PHOTOS / "astronaut.png")))
    assert rig.style == "inked"
