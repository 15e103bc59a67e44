"""The coarse-grid warp (LIKENESS_WARP_MAP_STEP=2, the default) against the per-pixel one on real
frames: the same picture to a fraction of a grey level, and the background outside the mesh
bit-identical."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.domain.arkit import INDEX
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import build_rig
from services.render.warp import PiecewiseAffineWarp

ROOT = Path(__file__).resolve().parents[1]


def test_coarse_maps_match_per_pixel_maps(monkeypatch):
    rig = build_rig(load_photo(ROOT / "assets" / "photos" / "astronaut.png"), size=768)
    monkeypatch.setenv("LIKENESS_WARP_MAP_STEP", "1")
    exact = Renderer(rig)
    monkeypatch.setenv("LIKENESS_WARP_MAP_STEP", "2")
    coarse = Renderer(rig)
    assert exact.warp.step == 1 and coarse.warp.step == 2
    rng = np.random.default_rng(0)
    for k in range(6):
        w = np.zeros(52)
        w[INDEX["jawOpen"]] = 0.1 * k
        w[INDEX["mouthSmileLeft"]] = w[INDEX["mouthSmileRight"]] = 0.5 * rng.random()
        w[INDEX["mouthPucker"]] = 0.6 * rng.random()
        w[INDEX["eyeBlinkLeft"]] = rng.random()
        pose = np.concatenate([rng.uniform(-0.3, 0.3, 3), rng.uniform(-0.05, 0.05, 3)])
        a = exact.render(w, pose).astype(np.int16)
        b = coarse.render(w, pose).astype(np.int16)
        diff = np.abs(a - b).max(axis=2)
        assert diff.mean() < 0.05, (k, diff.mean())
        assert np.percentile(diff, 99.9) <= 6, (k, np.percentile(diff, 99.9))
        mx1, my1 = exact.warp.last_maps
        mx2, my2 = coarse.warp.last_maps
        err = np.hypot(mx1 - mx2, my1 - my2)
        assert np.percentile(err, 99) < 0.35, (k, np.percentile(err, 99))
        # Outside the moving region and outside the mesh, both leave the photo as it is.
        x0, y0, x1, y1 = coarse.warp.region
        still = np.ones(a.shape[:2], bool)
        still[y0:y1, x0:x1] = False
        assert (b[still] == rig.image[still]).all()
        outside = coarse.warp._outside_band
        identity_x = np.broadcast_to(coarse.warp.grid_x, mx2.shape).ravel()[outside]
        assert (mx2.ravel()[outside] == identity_x).all()


def test_coarse_warp_of_a_pure_shift_is_exact():
    """An affine motion of the whole mesh: the coarse grid reproduces it exactly (maps are linear)."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (200, 240, 3), dtype=np.uint8)
    pts = np.array([[40, 40], [200, 40], [200, 160], [40, 160], [120, 100]], float)
    tris = np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]])
    dst = pts.copy()
    dst[4] += (3.3, -2.1)  # only the centre moves: the outer boundary stays
    out1, out2 = image.copy(), image.copy()
    PiecewiseAffineWarp(pts, tris, image.shape[:2], (30, 30, 210, 170), map_step=1).warp(image, dst, out1)
    w2 = PiecewiseAffineWarp(pts, tris, image.shape[:2], (30, 30, 210, 170), map_step=2)
    w2.warp(image, dst, out2)
    diff = np.abs(out1.astype(int) - out2.astype(int))
    assert diff.mean() < 0.5
    assert (out2[:30] == image[:30]).all() and (out2[:, :30] == image[:, :30]).all()
