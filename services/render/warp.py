"""Piecewise-affine image warp over a fixed triangle mesh, restricted to the moving region.

Per frame: rasterise the destination triangles into a triangle-id map (cv2.fillConvexPoly), look up
each pixel's inverse affine (destination -> source), and cv2.remap once.
Pixels outside the mesh keep the source image, so a mesh whose outer ring is fixed leaves the
background bit-identical.

The per-pixel coefficient lookup dominates at 1080p, so the source coordinate maps are computed on a
grid `map_step` (default 2) times coarser and upsampled bilinearly: the maps are continuous and
piecewise linear, so this is exact inside triangles and off by a fraction of a pixel along edges where
the map bends little. Computed per pixel instead: just outside the outer boundary (the background
stays bit-identical), around triangles whose affine is overridden (the eyeballs under the lids: the map
jumps there) and around triangles where the map bends sharply (lips pressed or stretched, a mouth
opening). Against map_step 1 the difference is invisible and the warp cheaper
(docs/notes/render.md#the-warps-coarse-maps).
"""
from __future__ import annotations


import cv2
import numpy as np

from services.common import config

_SHIFT = 4  # fillConvexPoly sub-pixel bits: vertices at 1/16 px
_EXACT_MARGIN = 3  # full-resolution pixels computed exactly around an overridden triangle
# Where the map's gradient changes across a triangle edge by `kink` (source px per output px),
# bilinear upsampling from a grid `step` px apart errs by about step * kink / 4 px: triangles next to
# a kink above 4 * MAX_UPSAMPLE_ERROR / step are computed per pixel.
MAX_UPSAMPLE_ERROR = 0.5
_CELL = 16  # exact patches are unions of these cells (px), merged into connected boxes


def default_map_step() -> int:
    """LIKENESS_WARP_MAP_STEP: 1 = exact per-pixel maps, 2 (default) = maps on a 2x coarser grid."""
    return max(1, min(4, config.get_int("LIKENESS_WARP_MAP_STEP")))


class PiecewiseAffineWarp:
    def __init__(self, src_points: np.ndarray, triangles: np.ndarray, shape: tuple[int, int],
                 region: tuple[int, int, int, int], depth: np.ndarray | None = None,
                 map_step: int | None = None) -> None:
        """`region` (x0, y0, x1, y1) must contain every destination triangle of every frame.

        depth [F] (larger = farther): overlapping triangles are painted far to near, so when a head
        turn folds the mesh (the nose passing over the far cheek) the nearer surface shows.
        map_step: 1 computes the maps per pixel; k > 1 on a k-times coarser grid (see module doc).
        """
        self.src = np.asarray(src_points, dtype=np.float64)[:, :2]
        self.triangles = np.asarray(triangles, dtype=np.int32)
        self.shape = shape
        x0, y0, x1, y1 = region
        self.region = (max(0, x0), max(0, y0), min(shape[1], x1), min(shape[0], y1))
        x0, y0, x1, y1 = self.region
        rw, rh = x1 - x0, y1 - y0
        self.grid_x = np.arange(x0, x1, dtype=np.float32)[None, :]
        self.grid_y = np.arange(y0, y1, dtype=np.float32)[:, None]
        area = _signed_areas(self.src, self.triangles)
        # Collapsed source triangles (a closed lip seam) have no meaningful orientation.
        self.src_area_sign = np.where(np.abs(area) < 0.25, 0.0, np.sign(area))
        far_first = np.argsort(-depth, kind="stable") if depth is not None else np.arange(len(area))
        self.paint_order = far_first.astype(np.int64)
        self._ids = np.empty((rh, rw), dtype=np.int32)
        self.last_folded = 0
        self.last_maps: tuple[np.ndarray, np.ndarray] | None = None

        self.step = default_map_step() if map_step is None else max(1, int(map_step))
        if self.step > 1:
            k = self.step
            # Coarse sample j sits at the centre of full pixels [x0 - k + k j, x0 + k j): one sample
            # of padding on every side, so bilinear upsampling never clamps inside the region.
            cw, ch = -(-rw // k) + 2, -(-rh // k) + 2
            self._origin = np.array([x0 - k + (k - 1) / 2, y0 - k + (k - 1) / 2])
            self.coarse_x = (self._origin[0] + k * np.arange(cw, dtype=np.float64)).astype(np.float32)[None, :]
            self.coarse_y = (self._origin[1] + k * np.arange(ch, dtype=np.float64)).astype(np.float32)[:, None]
            self._coarse_ids = np.empty((ch, cw), dtype=np.int32)
            # Pixels just outside the mesh (the fixed outer boundary) get the identity exactly: the
            # coarse grid would blend them with the moving band inside.
            boundary = _outer_boundary(self.src, self.triangles)
            inside = np.zeros((rh, rw), np.uint8)
            if boundary is not None:
                poly = np.round((boundary - (x0, y0)) * (1 << _SHIFT)).astype(np.int32)
                cv2.fillPoly(inside, [poly], 1, cv2.LINE_8, _SHIFT)
            near = cv2.dilate(inside, np.ones((2 * k + 3, 2 * k + 3), np.uint8))
            self._outside_band = np.flatnonzero((near > 0) & (inside == 0))
            # Neighbouring triangles (sharing an edge): where their affines differ a lot (lips
            # pressed or stretched, the seam of an opening mouth) bilinear upsampling of the map
            # would blur the kink; those are computed per pixel like overridden ones.
            self._neighbours = _edge_neighbours(self.triangles)
            # ... and likewise along the outer boundary, against the still outside (the identity).
            self._boundary_triangles = _boundary_triangles(self.triangles)

    def inverse_affines(self, dst_points: np.ndarray) -> np.ndarray:
        """[F, 6] (a, b, c, d, e, f): src = (a x + b y + c, d x + e y + f) for dst (x, y)."""
        d = dst_points[self.triangles][..., :2]  # [F, 3, 2]
        s = self.src[self.triangles]
        dm = np.stack([d[:, 1] - d[:, 0], d[:, 2] - d[:, 0]], axis=2)  # [F, 2, 2] columns = edges
        sm = np.stack([s[:, 1] - s[:, 0], s[:, 2] - s[:, 0]], axis=2)
        det = dm[:, 0, 0] * dm[:, 1, 1] - dm[:, 0, 1] * dm[:, 1, 0]
        det = np.where(np.abs(det) < 1e-9, 1e-9, det)
        inv = np.stack([np.stack([dm[:, 1, 1], -dm[:, 0, 1]], 1),
                        np.stack([-dm[:, 1, 0], dm[:, 0, 0]], 1)], 1) / det[:, None, None]
        lin = sm @ inv  # [F, 2, 2]
        off = s[:, 0] - np.einsum("fij,fj->fi", lin, d[:, 0])
        return np.concatenate([lin[:, 0], off[:, :1], lin[:, 1], off[:, 1:]], axis=1)

    def folded(self, dst_points: np.ndarray) -> np.ndarray:
        """Triangles whose orientation flipped (or collapsed) relative to the source mesh."""
        area = _signed_areas(dst_points[:, :2], self.triangles)
        return (np.sign(area) != self.src_area_sign) & (self.src_area_sign != 0)

    def warp(self, image: np.ndarray, dst_points: np.ndarray, out: np.ndarray,
             affine_override: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Write the warped region of `image` into `out` (same shape; outside the region untouched).

        affine_override: (triangle indices, [K, 6] inverse affines) replacing the mesh's own, e.g. to
        carry an eyeball rigidly under moving lids.
        """
        x0, y0, x1, y1 = self.region
        affines = self.inverse_affines(dst_points)
        if affine_override is not None:
            affines[affine_override[0]] = affine_override[1]
        folded = self.folded(dst_points)
        self.last_folded = int(folded.sum())
        # Index n = identity (pixels no triangle covers keep the source pixel).
        table = np.concatenate([affines, [[1, 0, 0, 0, 1, 0]]]).astype(np.float32)
        # Folded triangles first so healthy neighbours win the overlap; then far to near.
        folded_in_order = folded[self.paint_order]
        order = np.concatenate([self.paint_order[folded_in_order], self.paint_order[~folded_in_order]])
        dst_tri = dst_points[self.triangles][..., :2]
        if self.step == 1:
            map_x, map_y = self._maps(table, dst_tri, order, (x0, y0), 1.0, self._ids,
                                      self.grid_x, self.grid_y)
        else:
            k = self.step
            cx, cy = self._maps(table, dst_tri, order, self._origin, 1.0 / k, self._coarse_ids,
                                self.coarse_x, self.coarse_y)
            size = (cx.shape[1] * k, cx.shape[0] * k)
            crop = (slice(k, k + y1 - y0), slice(k, k + x1 - x0))
            map_x = cv2.resize(cx, size, interpolation=cv2.INTER_LINEAR)[crop]
            map_y = cv2.resize(cy, size, interpolation=cv2.INTER_LINEAR)[crop]
            a, b = self._neighbours[:, 0], self._neighbours[:, 1]
            kink = np.abs(affines[a][:, [0, 1, 3, 4]] - affines[b][:, [0, 1, 3, 4]]).max(axis=1)
            limit = 4 * MAX_UPSAMPLE_ERROR / k
            bt = self._boundary_triangles
            edge_kink = np.abs(affines[bt][:, [0, 1, 3, 4]] - (1, 0, 0, 1)).max(axis=1)
            exact = np.union1d(self._neighbours[kink > limit], bt[edge_kink > limit])
            if affine_override is not None:
                exact = np.union1d(exact, np.asarray(affine_override[0]))
            boxes = _boxes(dst_tri[exact], _EXACT_MARGIN, (x0, y0, x1, y1))
            if boxes:
                bounds = (dst_tri.min(axis=1), dst_tri.max(axis=1))
                for box in boxes:
                    self._exact_patch(table, dst_tri, bounds, order, box, map_x, map_y)
            # Last: just outside the mesh nothing moves (the per-pixel fill also grazes those pixels).
            band = self._outside_band
            map_x.flat[band] = np.broadcast_to(self.grid_x, map_x.shape).flat[band]
            map_y.flat[band] = np.broadcast_to(self.grid_y, map_y.shape).flat[band]
        out[y0:y1, x0:x1] = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_REPLICATE)
        self.last_maps = (map_x, map_y)

    @staticmethod
    def _maps(table: np.ndarray, dst_tri: np.ndarray, order: np.ndarray, origin, scale: float,
              ids: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source maps on a grid whose pixel (0, 0) sits at `origin`, `1/scale` px apart."""
        ids.fill(len(table) - 1)
        pts = np.round((dst_tri - origin) * (scale * (1 << _SHIFT))).astype(np.int32)
        for t in order.tolist():
            cv2.fillConvexPoly(ids, pts[t], t, cv2.LINE_8, _SHIFT)
        coef = np.take(table, ids, axis=0)
        return (coef[..., 0] * gx + coef[..., 1] * gy + coef[..., 2],
                coef[..., 3] * gx + coef[..., 4] * gy + coef[..., 5])

    def _exact_patch(self, table: np.ndarray, dst_tri: np.ndarray, bounds: tuple[np.ndarray, np.ndarray],
                     order: np.ndarray,
                     box: tuple[float, float, float, float], map_x: np.ndarray, map_y: np.ndarray) -> None:
        """Per-pixel maps inside `box` (x0, y0, x1, y1), where the map jumps at a triangle edge."""
        x0, y0, x1, y1 = self.region
        bx0, by0 = int(max(np.floor(box[0]), x0)), int(max(np.floor(box[1]), y0))
        bx1, by1 = int(min(np.ceil(box[2]) + 1, x1)), int(min(np.ceil(box[3]) + 1, y1))
        if bx1 <= bx0 or by1 <= by0:
            return
        tri_lo, tri_hi = bounds  # each destination triangle's bounding box
        touches = ((tri_hi[:, 0] >= bx0 - 1) & (tri_lo[:, 0] <= bx1) &
                   (tri_hi[:, 1] >= by0 - 1) & (tri_lo[:, 1] <= by1))
        ids = np.empty((by1 - by0, bx1 - bx0), np.int32)
        gx = np.arange(bx0, bx1, dtype=np.float32)[None, :]
        gy = np.arange(by0, by1, dtype=np.float32)[:, None]
        px, py = self._maps(table, dst_tri, order[touches[order]], (bx0, by0), 1.0, ids, gx, gy)
        sel = (slice(by0 - y0, by1 - y0), slice(bx0 - x0, bx1 - x0))
        map_x[sel], map_y[sel] = px, py

    def warp_like_last(self, image: np.ndarray) -> np.ndarray:
        """Another image of the same size (e.g. a person matte) moved exactly as the last frame."""
        out = image.copy()
        if self.last_maps is not None:
            x0, y0, x1, y1 = self.region
            out[y0:y1, x0:x1] = cv2.remap(image, *self.last_maps, cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REPLICATE)
        return out


def _edge_neighbours(triangles: np.ndarray) -> np.ndarray:
    """[E, 2] pairs of triangle indices that share an edge."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    owner = np.tile(np.arange(len(triangles)), 3)
    key = np.sort(edges, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    key, owner = key[order], owner[order]
    same = (key[1:] == key[:-1]).all(axis=1)
    return np.stack([owner[:-1][same], owner[1:][same]], axis=1)


def _boundary_triangles(triangles: np.ndarray) -> np.ndarray:
    """Indices of the triangles with an edge no other triangle shares."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    owner = np.tile(np.arange(len(triangles)), 3)
    _, inverse, counts = np.unique(edges, axis=0, return_inverse=True, return_counts=True)
    return np.unique(owner[counts[inverse.reshape(-1)] == 1])


def _boxes(tris: np.ndarray, margin: float,
           region: tuple[int, int, int, int]) -> list[tuple[float, float, float, float]]:
    """Boxes covering triangles [K, 3, 2] (grown by `margin`): connected groups of _CELL cells."""
    if not len(tris):
        return []
    x0, y0, x1, y1 = region
    lo = np.floor((tris.min(axis=1) - margin - (x0, y0)) / _CELL).astype(int)
    hi = np.floor((tris.max(axis=1) + margin - (x0, y0)) / _CELL).astype(int)
    cw, ch = -(-(x1 - x0) // _CELL), -(-(y1 - y0) // _CELL)
    lo = np.clip(lo, 0, (cw - 1, ch - 1))
    hi = np.clip(hi, 0, (cw - 1, ch - 1))
    cells = np.zeros((ch, cw), np.uint8)
    for (ax, ay), (bx, by) in zip(lo.tolist(), hi.tolist()):
        cells[ay:by + 1, ax:bx + 1] = 1
    n, _, stats, _ = cv2.connectedComponentsWithStats(cells, connectivity=8)
    return [(x0 + sx * _CELL, y0 + sy * _CELL, x0 + (sx + sw) * _CELL - 1, y0 + (sy + sh) * _CELL - 1)
            for sx, sy, sw, sh, _ in stats[1:].tolist()]


def _outer_boundary(points: np.ndarray, triangles: np.ndarray) -> np.ndarray | None:
    """The mesh's outer boundary as one closed polygon [K, 2] (edges used by one triangle only)."""
    edges = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    uniq, counts = np.unique(edges, axis=0, return_counts=True)
    single = uniq[counts == 1]
    if len(single) < 3:
        return None
    nxt: dict[int, list[int]] = {}
    for a, b in single.tolist():
        nxt.setdefault(a, []).append(b)
        nxt.setdefault(b, []).append(a)
    # Follow the loop through the point farthest from the centroid (on the outer boundary).
    used = np.unique(single)
    start = int(used[np.argmax(np.linalg.norm(points[used] - points[used].mean(axis=0), axis=1))])
    loop, prev, cur = [start], -1, start
    while True:
        cand = [v for v in nxt[cur] if v != prev]
        if not cand:
            return None
        prev, cur = cur, cand[0]
        if cur == start:
            break
        loop.append(cur)
        if len(loop) > len(used):
            return None
    return points[loop]


def _signed_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    p = points[triangles][..., :2]
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    return 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])
