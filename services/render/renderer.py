"""Per-frame composition: blendshapes + head pose -> posed mesh -> warp -> mouth interior -> lids."""
from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from services.common.domain.arkit import ARKIT_52, HEAD_POSE, INDEX
from services.common.domain.expression_track import ExpressionTrack
from services.render.basis import ContactConstraints, build_basis, smoothstep
from services.render.head import HeadPose, build_rings, turn_depth
from services.render.keypoints import measure_eye
from services.render.mouth import MouthInterior
from services.render.rig import (
    CHIN, FACE_OVAL, FOREHEAD_TOP, LEFT_EYE, LIP_LOWER_INNER, LIP_UPPER_INNER, NUM_MESH, RIGHT_EYE,
    EyeTopology, FaceRig,
    eye_opening_triangles, face_triangles, mouth_opening_triangles, rest_mesh, strip_triangles,
)
from services.render.style import DRAWN_STYLES, mode_colour, paint_and_line, polygon_mask
from services.render.warp import PiecewiseAffineWarp

# Head pose is clamped to what a 2D warp of one photo can show (about 20 degrees, 0.3 face heights).
POSE_LIMIT = np.array([0.35, 0.35, 0.35, 0.3, 0.3, 0.3])
RING_FOLLOWS_OVAL = 0.85
JAW_ROOM = 0.8  # of the head ring's gap to the anchor ring below the chin (Renderer._jaw_room)


_CLOSE, _JAW = INDEX["mouthClose"], INDEX["jawOpen"]
# Channels that move the lids. On keypoint faces the warp leaves the lids where they are (it would drag
# the fur above the eye down into streaks): the lid is painted over the eye instead (_Eyelids.curtain).
_LID_CHANNELS = np.array([i for n, i in INDEX.items() if n.startswith(("eyeBlink", "eyeSquint", "eyeWide"))])


class Renderer:
    """Renders frames of one rig (~5 ms per 512x512 frame on one core).

    Not thread-safe (it reuses buffers): one Renderer per thread; they can share the FaceRig.
    """

    def __init__(self, rig: FaceRig) -> None:
        self.rig = rig
        self.image = np.ascontiguousarray(rig.image)
        size = rig.size
        lm = rest_mesh(rig.landmarks)
        self.rest = lm
        self.basis = build_basis(lm).reshape(len(ARKIT_52) + 1, -1).astype(np.float64)
        self.constraints = ContactConstraints(lm)
        self.head = HeadPose(lm)
        self.rings = build_rings(lm, size)
        self.turn_dz = turn_depth(lm) - lm[:, 2]  # added to the depth when the head turns

        # Control points: the 468 mesh points (irises excluded: they fold triangles in a blink),
        # then the head ring, then the fixed anchor ring.
        k = len(FACE_OVAL)
        self.head_ring = np.arange(NUM_MESH, NUM_MESH + k)
        self.anchor_ring = np.arange(NUM_MESH + k, NUM_MESH + 2 * k)
        src = np.concatenate([lm[:NUM_MESH, :2], self.rings.head[:, :2], self.rings.anchor])
        oval = list(FACE_OVAL) + [FACE_OVAL[0]]
        ring = list(self.head_ring) + [self.head_ring[0]]
        anchor = list(self.anchor_ring) + [self.anchor_ring[0]]
        eye_tris = {name: eye_opening_triangles(eye) for name, eye in
                    (("right", RIGHT_EYE), ("left", LEFT_EYE))}
        triangles = [*map(tuple, face_triangles()), *mouth_opening_triangles(),
                     *eye_tris["right"], *eye_tris["left"],
                     *strip_triangles(tuple(oval), tuple(ring)),
                     *strip_triangles(tuple(ring), tuple(anchor))]
        self.triangles = np.array(triangles, dtype=np.int32)
        n_before_eyes = len(face_triangles()) + len(mouth_opening_triangles())
        n_right = len(eye_tris["right"])
        self.eye_triangles = {
            "right": np.arange(n_before_eyes, n_before_eyes + n_right),
            "left": np.arange(n_before_eyes + n_right, n_before_eyes + n_right + len(eye_tris["left"])),
        }
        lo, hi = self.rings.anchor.min(axis=0), self.rings.anchor.max(axis=0)
        region = (int(lo[0]) - 1, int(lo[1]) - 1, int(np.ceil(hi[0])) + 2, int(np.ceil(hi[1])) + 2)
        depth = np.concatenate([lm[:NUM_MESH, 2], self.rings.head[:, 2],
                                np.full(k, self.rings.head[0, 2] + size)])[self.triangles].mean(axis=1)
        self.warp = PiecewiseAffineWarp(src, self.triangles, self.image.shape[:2], region, depth)
        self.mouth = MouthInterior(rig)
        self.lids = _Eyelids(rig, lm, curtain=rig.source == "keypoints")
        if rig.style in DRAWN_STYLES:
            self.lids = _DrawnLids(rig, lm, self.lids)
        self.gaze = _Gaze(lm)
        # A template fitted to keypoints knows where the pupils are but not the iris size: the
        # lids blink (the eye opening was measured in the photo), the gaze stays put.
        self.still_eyes = (np.array([i for n, i in INDEX.items() if n.startswith("eyeLook")])
                           if rig.source == "keypoints" else None)
        self._src_eye_refs = {name: _eye_reference(lm, eye) for name, eye in
                              (("right", RIGHT_EYE), ("left", LEFT_EYE))}
        self.jaw_room = None
        w = np.zeros(len(ARKIT_52))
        w[_JAW] = 1.0
        self._full_drop = float(self.deform(w)[CHIN, 1] - self.rest[CHIN, 1])
        self.jaw_room = self._jaw_room()

    def _jaw_room(self) -> float | None:
        """The chin's drop (px) the frame leaves room for, when a full jawOpen would take more, else
        None. Below the chin the head ring follows the jaw (RING_FOLLOWS_OVAL) toward the fixed
        anchor ring, which the frame's border holds in; in a tight crop (a drawing filling its
        frame) a full drop carried the ring past it: the strip between folded, the chin's outline
        vanished and the anchor ring's straight clipped edge cut the jaw. The ring may take up to
        JAW_ROOM of its gap to the anchor. Drawings only: a drawn chin is an outline that must stay
        continuous; photos keep their motion unchanged (the cat's crop is as tight: room 10 px for
        a 46 px drop, docs/notes/render.md#picture-styles)."""
        if self.rig.style not in DRAWN_STYLES:
            return None
        k = list(FACE_OVAL).index(CHIN)
        gap = float(self.rings.anchor[k, 1] - self.rings.head[k, 1])
        room = JAW_ROOM * gap / RING_FOLLOWS_OVAL
        return room if self._full_drop > room > 0 else None

    # ---------------------------------------------------------------------------------------------
    def deform(self, weights: np.ndarray) -> np.ndarray:
        """Blendshape-deformed landmarks [478, 3] before head pose (contacts resolved)."""
        # ARKit's mouthClose closes the lips against an open jaw: its jaw-travel part is weighted by
        # min(mouthClose, jawOpen), or a closed jaw would push the lower lip up and smear the chin.
        if self.jaw_room is not None:
            # The jaw's whole range scaled, not clipped: every opening stays in proportion to the
            # command (a knee flattened the wide ones together: mediapipe r 0.64 vs 0.78 scaled).
            weights = weights.copy()
            weights[_JAW] *= self.jaw_room / self._full_drop
        over_jaw = min(weights[_CLOSE], max(weights[_JAW], 0.0))
        pts = self.rest + (np.append(weights, over_jaw) @ self.basis).reshape(-1, 3)
        return self.constraints.apply(pts)

    def pose_mesh(self, weights: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
        """Posed landmark positions [478, 2] for these weights and head pose (irises included)."""
        return self._pose(self.deform(weights), head_pose)

    def _pose(self, pts: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
        posed = self.head.apply(self._turnable(pts), head_pose)
        for name, eye in (("right", RIGHT_EYE), ("left", LEFT_EYE)):
            # Irises ride rigidly with the eyeball, not with the lids.
            ref = self._src_eye_refs[name]
            fwd = _affine_from(ref, self.head.apply(ref, head_pose))
            posed[list(eye.iris)] = self.rest[list(eye.iris), :2] @ fwd[:, :2].T + fwd[:, 2]
        return posed

    def _turnable(self, pts: np.ndarray) -> np.ndarray:
        out = pts.copy()
        out[:, 2] += self.turn_dz
        return out

    def render(self, weights: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
        """One RGB uint8 frame [size, size, 3] for ARKit-52 `weights` and a 6-value `head_pose`."""
        weights = np.nan_to_num(np.asarray(weights, dtype=np.float64).reshape(-1), nan=0.0)
        head_pose = np.nan_to_num(np.asarray(head_pose, dtype=np.float64).reshape(-1), nan=0.0)
        if weights.shape != (len(ARKIT_52),) or head_pose.shape != (len(HEAD_POSE),):
            raise ValueError(f"weights must be [52] and head_pose [6], got {weights.shape}, "
                             f"{head_pose.shape}")
        weights = np.clip(weights, 0.0, 1.0)
        if self.still_eyes is not None:
            weights[self.still_eyes] = 0.0
        head_pose = np.clip(head_pose, -POSE_LIMIT, POSE_LIMIT)
        out = self.image.copy()
        if not weights.any() and not head_pose.any():
            self.warp.last_maps = None  # the rest frame: nothing moved
            return out
        pts = self.deform(weights)
        posed = self._pose(pts, head_pose)
        warped = posed
        if self.lids.curtain and weights[_LID_CHANNELS].any():
            still_lids = weights.copy()
            still_lids[_LID_CHANNELS] = 0.0
            warped = self._pose(self.deform(still_lids), head_pose)
        # The head ring follows the face oval's own deformation (a dropped jaw moves the neck line).
        oval_delta = pts[list(FACE_OVAL)] - self.rest[list(FACE_OVAL)]
        ring_rest = self.rings.head + RING_FOLLOWS_OVAL * oval_delta
        rings = self.head.apply(ring_rest, head_pose, self.rings.head_follow)
        dst = np.concatenate([warped[:NUM_MESH], rings, self.rings.anchor])

        overrides_idx, overrides_aff = [], []
        for name in ("right", "left"):
            ref = self._src_eye_refs[name]
            inv = _affine_from(self.head.apply(ref, head_pose), ref[:, :2])
            overrides_idx.append(self.eye_triangles[name])
            overrides_aff.append(np.repeat(inv.reshape(1, 6), len(self.eye_triangles[name]), 0))
        self.warp.warp(self.image, dst, out,
                       (np.concatenate(overrides_idx), np.concatenate(overrides_aff)))

        scale = float(np.linalg.det(self.head.matrix(head_pose)[0][:2, :2])) ** 0.5
        skull = self.head.apply(self._turnable(self.rest), head_pose)  # rest face moved by the head pose only
        down = skull[CHIN, :2] - skull[FOREHEAD_TOP, :2]
        jaw_drop = float((posed[CHIN] - skull[CHIN, :2]) @ down / max(np.linalg.norm(down), 1e-6))
        self.mouth.render(out, posed[list(LIP_UPPER_INNER)], posed[list(LIP_LOWER_INNER)],
                          scale=scale, tongue_out=float(weights[INDEX["tongueOut"]]),
                          skull_upper=skull[list(LIP_UPPER_INNER), :2], jaw_drop=max(jaw_drop, 0.0))
        self.gaze.render(out, posed, weights)
        self.lids.render(out, posed, skull)
        return out

    def warp_like_last(self, image: np.ndarray) -> np.ndarray:
        """An image aligned with the rig (e.g. a person matte) moved as the last rendered frame."""
        return self.warp.warp_like_last(image)

    def render_track(self, track: ExpressionTrack) -> Iterator[np.ndarray]:
        for i in range(len(track)):
            yield self.render(track.weights[i], track.head_pose[i])


def _curtain_lines(image: np.ndarray, rest: np.ndarray, eye: EyeTopology) -> tuple[np.ndarray, np.ndarray]:
    """(upper, lower) [n, 2] outlines of a keypoint face's eye, left to right, sampled at the same
    x: the eye measured around its pupil (keypoints.measure_eye), else the mesh's own opening."""
    ends = [eye.corners[0], eye.corners[1]]
    upper, lower = rest[[ends[0], *eye.upper[0], ends[1]], :2], rest[[ends[0], *eye.lower[0], ends[1]], :2]
    iod = float(np.linalg.norm(rest[473, :2] - rest[468, :2]))
    found = measure_eye(image, rest[eye.iris[0], :2], iod)
    if found is not None:
        outline = found.boundary(256)
        first, last = int(np.argmin(outline[:, 0])), int(np.argmax(outline[:, 0]))
        arcs = (np.roll(outline, -first, axis=0)[:(last - first) % 256 + 1],
                np.roll(outline, -last, axis=0)[:(first - last) % 256 + 1])
        upper, lower = sorted(arcs, key=lambda arc: float(arc[:, 1].mean()))
    xs = np.linspace(max(upper[:, 0].min(), lower[:, 0].min()), min(upper[:, 0].max(), lower[:, 0].max()), 33)

    def at(arc: np.ndarray) -> np.ndarray:
        order = np.argsort(arc[:, 0])
        return np.column_stack([xs, np.interp(xs, arc[order, 0], arc[order, 1])])

    return at(upper), at(lower)


def _eye_reference(lm: np.ndarray, eye: EyeTopology) -> np.ndarray:
    """Three 3D points fixed to the eyeball: the two corners and a point above the eye centre."""
    outer, inner = lm[eye.corners[0]], lm[eye.corners[1]]
    centre = (outer + inner) / 2
    across = inner[:2] - outer[:2]
    up = np.array([across[1], -across[0]]) * 0.5
    if up[1] > 0:
        up = -up
    third = np.array([centre[0] + up[0], centre[1] + up[1], centre[2]])
    return np.stack([outer, inner, third])


def _affine_from(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 affine mapping 3 points src[:, :2] -> dst[:, :2] (as a [2, 3] array)."""
    return cv2.getAffineTransform(src[:, :2].astype(np.float32), dst[:, :2].astype(np.float32))


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# Keypoint faces' painted lid: how much it darkens toward its edge, and the edge line's darkening.
CURTAIN_SHADE = 0.18
CURTAIN_MARGIN_DARK = 0.35


class _Eyelids:
    """As an upper lid comes down, eyelid skin covers the eye and the lash line darkens.

    The warp alone stretches the thin band of lid (lashes included) above the margin into a dark
    smudge; the band the lid sweeps over is repainted with lid-skin colour sampled above the eye,
    fading out toward the new margin so the lashes stay at the edge.

    `curtain` (faces placed from keypoints: pets, cartoons): the eye is large and round and the lid
    is fur or flat paint; the warp leaves the eye alone and the lid is the texture just above the eye
    mirrored down over it (`_curtain`).
    """

    def __init__(self, rig: FaceRig, rest: np.ndarray, curtain: bool = False) -> None:
        self.curtain = curtain
        img = rig.image.astype(np.float32)
        luma = img @ _LUMA
        self.eyes = []
        for eye in (RIGHT_EYE, LEFT_EYE):
            margin = [eye.corners[0], *eye.upper[0], eye.corners[1]]
            if rest[margin[0], 0] > rest[margin[-1], 0]:
                margin = margin[::-1]  # left to right in the image, for np.interp
            rest_gap = float(np.mean(rest[list(eye.lower[0][2:5]), 1] - rest[list(eye.upper[0][2:5]), 1]))
            band = np.concatenate([rest[list(eye.upper[1]), :2], rest[list(eye.upper[2])[::-1], :2]])
            mask = np.zeros(luma.shape, np.uint8)
            cv2.fillPoly(mask, [np.round(band).astype(np.int32)], 1)
            pix, lum = img[mask > 0], luma[mask > 0]
            if len(pix) < 5:
                continue
            # Lid skin: the brighter part of the band (skips lashes, brow hairs, glasses rims).
            skin = np.median(pix[lum >= np.percentile(lum, 60)], axis=0)
            lash = np.median(pix[lum <= np.percentile(lum, 10)], axis=0) * 0.85
            self.eyes.append((eye, margin, max(rest_gap, 1.0), skin, lash))
        # Keypoint faces: the lid closes the eye measured in the photo (the mesh's opening is made
        # larger than the eye, to hold it), in rest coordinates; `rings` carry them with the head.
        measured = self.eyes if curtain else []
        self.curtain_lines = {eye.iris[0]: _curtain_lines(rig.image, rest, eye) for eye, *_ in measured}
        self.rings = {eye.iris[0]: [eye.corners[0], *eye.upper[0], eye.corners[1], *eye.lower[0]]
                      for eye, *_ in self.eyes}
        self.rest = rest[:, :2]

    def render(self, frame: np.ndarray, posed: np.ndarray, rest_posed: np.ndarray) -> None:
        """posed / rest_posed: [478, 2] current and rest (head pose only) landmark positions."""
        for eye, margin, rest_gap, skin, lash in self.eyes:
            gap = float(np.mean(posed[list(eye.lower[0][2:5]), 1] - posed[list(eye.upper[0][2:5]), 1]))
            closed = float(np.clip(1.0 - gap / rest_gap, 0.0, 1.0))
            if self.curtain:
                if closed > 0.0:
                    self._curtain_eye(frame, eye, rest_posed, closed)
                continue
            if closed < 0.15:
                continue
            now, was = posed[margin], rest_posed[margin]
            x0 = max(int(np.floor(min(now[:, 0].min(), was[:, 0].min()))) - 2, 0)
            x1 = min(int(np.ceil(max(now[:, 0].max(), was[:, 0].max()))) + 3, frame.shape[1])
            pad = int(rest_gap) + 3  # context for the skin fill
            y0 = max(int(np.floor(min(now[:, 1].min(), was[:, 1].min()))) - pad, 0)
            y1 = min(int(np.ceil(max(now[:, 1].max(), was[:, 1].max()))) + pad, frame.shape[0])
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            xs = np.arange(x0, x1, dtype=np.float32)
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            now = _smoothed_seam(now)
            y_now = np.interp(xs, _increasing(now[:, 0]), now[:, 1])[None, :]
            y_was = np.interp(xs, _increasing(was[:, 0]), was[:, 1])[None, :]
            inside = (xs > now[0, 0]) & (xs < now[-1, 0])
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            swept = np.clip((ys - y_was + 3.0) / 4.0, 0, 1) * np.clip((y_now - ys - 1.0) / 2.5, 0, 1)
            a_skin = swept * inside[None, :] * 0.9 * smoothstep(0.15, 0.7, closed)
            # Lid colour: the surrounding skin, smoothly filled in (normalised convolution over
            # the pixels that are not dark), so the lid matches the light around the eye.
            skin_luma = float(skin @ _LUMA)
            ok = np.clip((roi @ _LUMA - 0.75 * skin_luma) / (0.15 * skin_luma), 0, 1) * (1 - swept)
            sigma = 0.4 * rest_gap + 1.0
            num = cv2.GaussianBlur(roi * ok[..., None], (0, 0), sigma)
            den = cv2.GaussianBlur(ok, (0, 0), sigma)[..., None]
            colour = np.where(den > 0.05, num / np.maximum(den, 1e-3), skin[None, None, :])
            depth = np.clip((y_now - ys) / max(rest_gap, 1.0), 0, 1)  # the lid darkens to its edge
            colour = colour * (0.93 + 0.07 * depth)[..., None]
            # Replace what is darker than skin (stretched lashes, iris) and keep the skin's texture.
            darker = (skin_luma - roi @ _LUMA) / max(skin_luma, 1.0)
            a_skin = a_skin * np.clip(0.3 + 2.5 * darker, 0.3, 1.0)
            # Lash line: a soft dark curve along the current margin.
            d = ys - y_now
            a_lash = np.exp(-((d + 0.3) / 1.1) ** 2) * inside[None, :] * 0.4 * smoothstep(0.4, 1.0, closed)
            roi += (colour - roi) * a_skin[..., None]
            roi += (lash[None, None, :] - roi) * a_lash[..., None]
            frame[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


    def _curtain_eye(self, frame: np.ndarray, eye: EyeTopology, rest_posed: np.ndarray, closed: float) -> None:
        """The measured eye, carried by the head pose (the affine that best maps the eye's rest rings
        to where the pose put them), closed by `closed` of its height in every column."""
        upper, lower = self.curtain_lines[eye.iris[0]]
        ring = self.rings[eye.iris[0]]
        src = np.column_stack([self.rest[ring], np.ones(len(ring))])
        affine, *_ = np.linalg.lstsq(src, rest_posed[ring, :2], rcond=None)
        top = np.column_stack([upper, np.ones(len(upper))]) @ affine
        bottom = np.column_stack([lower, np.ones(len(lower))]) @ affine
        self._curtain(frame, top + closed * (bottom - top), top, closed)

    @staticmethod
    def _curtain(frame: np.ndarray, now: np.ndarray, was: np.ndarray, closed: float) -> None:
        """The lid of a keypoint face: the fur (or paint) just above the eye, mirrored down over it.

        now / was: the current and rest upper margins, left to right. The warp left the eye where it
        was, so between the rest margin and the current one each column shows the texture above the
        rest margin reflected about it: continuous with the fur at the margin, and nothing changes
        beyond the corners (the lid's depth is 0 there), so no seam crosses the fur around the eye.
        The lid darkens a little toward its edge (it curves over the eyeball) and its edge is a soft
        dark line (a pet's lid margin; the closed eye's slit)."""
        left, right = float(now[0, 0]), float(now[-1, 0])
        x0, x1 = max(int(np.floor(left)) - 1, 0), min(int(np.ceil(right)) + 2, frame.shape[1])
        if x1 - x0 < 3:
            return
        xs = np.arange(x0, x1, dtype=np.float32)
        y_now = np.interp(xs, _increasing(now[:, 0]), now[:, 1])
        y_was = np.interp(xs, _increasing(was[:, 0]), was[:, 1])
        opening = (xs > left) & (xs < right)
        depth = np.where(opening, np.maximum(y_now - y_was, 0.0), 0.0)
        if depth.max() < 0.5:
            return
        y0 = max(int(np.floor((y_was - depth).min())) - 2, 0)  # the mirrored texture comes from here
        y1 = min(int(np.ceil(y_now.max())) + 3, frame.shape[0])
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        roi = frame[y0:y1, x0:x1].astype(np.float32)
        map_x = np.broadcast_to(xs[None, :] - x0, roi.shape[:2]).astype(np.float32)
        map_y = (np.where(ys > y_was, 2.0 * y_was - ys, ys) - y0).astype(np.float32)
        lid = cv2.remap(roi, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        along = np.clip((ys - y_was) / np.maximum(depth, 1.0), 0, 1)
        lid *= (1.0 - CURTAIN_SHADE * along ** 2)[..., None]
        edge = np.clip((y_now - ys) / 1.2 + 0.5, 0, 1)  # antialiased lid edge
        alpha = ((ys > y_was) & opening[None, :]) * edge
        roi += (lid - roi) * alpha[..., None]
        line = np.exp(-((ys - y_now + 0.5) / 1.2) ** 2) * (depth > 0.5)[None, :]
        roi *= (1.0 - CURTAIN_MARGIN_DARK * line * smoothstep(0.3, 0.8, closed))[..., None]
        frame[y0:y1, x0:x1] = np.clip(roi, 0, 255).astype(np.uint8)


# The lash line's thickness as measured at the eye's middle column, clipped to this range of face
# heights (a thin photo-like lash or a run into the brow would give a hairline or a slab).
LASH_RANGE = (0.006, 0.035)
SHUT_SAG = 0.25
LID_SHADE = 30.0


class _DrawnLids:
    """Lids of a drawing (flat-shaded or inked, style.py): an anime or cartoon blink is the lash line
    closing over the eye, so the lid is an opaque fill in the skin's flat colour from the top of the
    picture's own lash line down to the closing margin, and the lash line, in the picture's line
    colour and thickness, moves down with it. Shut, the eye is hidden behind a clean stroke. (The
    photo's lid, skin filled in translucently over the stretched lashes, reads on a drawing as a pale
    veil over an eye that stays visible, or, on ink, as grey smears.) As on keypoint faces, the warp
    leaves the lids where they are (`curtain`): it would squash the drawn eye and its thick lash line
    into a smear under the lid; a drawn lid comes down over a still eye.

    The eye: the connected non-skin region around the pupil (a drawn eye is everything inside its
    outline, lashes and white included, where the photo measurement finds the iris and the mesh's
    margins lie inside the drawn lash line), else the eye measured in the photo on a keypoint face
    (`shaded`), the mesh's lid margins on a detected one.
    """

    curtain = True

    def __init__(self, rig: FaceRig, rest: np.ndarray, shaded: "_Eyelids") -> None:
        self.shaded = shaded
        self.measured = shaded.curtain
        img = rig.image.astype(np.float32)
        luma = img @ _LUMA
        h, w = luma.shape
        fh = rig.face_height
        face = polygon_mask(luma.shape, rest[list(FACE_OVAL), :2])
        skin_all, line = paint_and_line(img, face)
        self.eyes = []
        if skin_all is None or line is None:
            return
        iod = float(np.linalg.norm(rest[473, :2] - rest[468, :2]))
        for eye, margin, rest_gap, _skin, _lash in shaded.eyes:
            drawn = _drawn_eye(img, rest[eye.iris[0], :2], iod, skin_all, line)
            lines = drawn if drawn is not None else \
                shaded.curtain_lines[eye.iris[0]] if self.measured else self._rest_lines(eye, margin, rest)
            was, low = lines
            xs = np.arange(int(np.ceil(was[0, 0])), int(np.floor(was[-1, 0])) + 1)
            xs = xs[(xs >= 0) & (xs < w)]
            if len(xs) < 3:
                continue
            y_was = np.interp(xs, _increasing(was[:, 0]), was[:, 1])
            y_low = np.interp(xs, _increasing(low[:, 0]), low[:, 1])
            height = float(np.max(y_low - y_was))
            # The lash line's thickness: the run of line-coloured pixels through the upper margin in
            # the eye's middle columns, and how far above the margin it reaches (the fill starts
            # above it, or the old line would stay above the lid).
            like = np.linalg.norm(img - line, axis=2) < 45
            tops, runs = [], []
            mid = slice(len(xs) // 3, 2 * len(xs) // 3)
            # (A drawn eye's region starts at its lash line's top: the run goes down from there; a
            # mesh margin lies in the line: the run stops a pixel below it, before the dark iris.)
            below = 0.4 * height if drawn is not None else 1.0
            for x, y in zip(xs[mid], y_was[mid]):
                y, col = int(round(y)), like[:, x]
                hit = [y + d for d in range(-int(0.3 * height) - 1, 3) if 0 <= y + d < h and col[y + d]]
                if not hit:
                    continue
                top = bottom = hit[-1]
                while top - 1 >= 0 and col[top - 1] and bottom - top < 0.4 * height:
                    top -= 1
                while bottom + 1 < h and col[bottom + 1] and bottom - top < 0.4 * height \
                        and bottom + 1 <= y + below:
                    bottom += 1
                tops.append(y - top)
                runs.append(bottom - top + 1)
            thick = float(np.clip(np.median(runs) if runs else 2.0, LASH_RANGE[0] * fh, LASH_RANGE[1] * fh))
            above = float(np.clip(np.median(tops) if tops else 0.0, 0.0, thick))
            # The lid's colour: the commonest colour of the band above the lash line, leaving out the
            # line work and dark shading (ink hatching can outnumber any one paint colour there).
            band = np.array([(int(round(y - above - d)), x) for x, y in zip(xs, y_was)
                             for d in range(2, int(0.45 * height) + 3)])
            band = band[(band[:, 0] >= 0) & (band[:, 0] < h)] if len(band) else band
            paint = img[band[:, 0], band[:, 1]] if len(band) else np.zeros((0, 3), np.float32)
            paint = paint[(np.linalg.norm(paint - line, axis=1) > 60)
                          & (paint @ _LUMA > 0.5 * float(skin_all @ _LUMA))]
            skin = mode_colour(paint)
            # (the face's own paint unless the eye's surroundings are a shade of it: a lid shaded
            # like the socket, not a highlight or the paper showing through line art)
            if skin is None or np.linalg.norm(skin - skin_all) > LID_SHADE:
                skin = skin_all
            self.eyes.append((eye, rest_gap, skin, line, thick, above, was, low))
        self.ring = {eye.iris[0]: [eye.corners[0], *eye.upper[0], eye.corners[1], *eye.lower[0]]
                     for eye, *_ in shaded.eyes}
        self.rest = rest[:, :2]

    @staticmethod
    def _rest_lines(eye: EyeTopology, margin: list[int], rest: np.ndarray):
        """The mesh's upper and lower lid margins at rest, left to right."""
        lower = [eye.corners[0], *eye.lower[0], eye.corners[1]]
        if rest[lower[0], 0] > rest[lower[-1], 0]:
            lower = lower[::-1]
        return rest[margin, :2].astype(np.float64), rest[lower, :2].astype(np.float64)

    def render(self, frame: np.ndarray, posed: np.ndarray, rest_posed: np.ndarray) -> None:
        for eye, rest_gap, skin, line, thick, above, upper, lower in self.eyes:
            gap = float(np.mean(posed[list(eye.lower[0][2:5]), 1] - posed[list(eye.upper[0][2:5]), 1]))
            closed = float(np.clip(1.0 - gap / rest_gap, 0.0, 1.0))
            if closed <= 0.0:
                continue
            # The eye carried by the head pose: the affine that best maps its rest rings to the pose's.
            ring = self.ring[eye.iris[0]]
            src = np.column_stack([self.rest[ring], np.ones(len(ring))])
            affine, *_ = np.linalg.lstsq(src, rest_posed[ring, :2], rcond=None)
            was = np.column_stack([upper, np.ones(len(upper))]) @ affine
            low = np.column_stack([lower, np.ones(len(lower))]) @ affine
            low_y = np.interp(was[:, 0], _increasing(low[:, 0]), low[:, 1])
            # Shut, the lids meet on a gentle arc a quarter of the way from the corners' chord to
            # the lower outline (a drawn closed eye; the lower outline itself would be a deep bowl):
            # the upper lid comes down to it, the lower one rises to it.
            chord = np.interp(was[:, 0], [was[0, 0], was[-1, 0]], [was[0, 1], was[-1, 1]])
            shut = chord + SHUT_SAG * (low_y - chord)
            now = np.column_stack([was[:, 0], was[:, 1] + closed * (shut - was[:, 1])])
            # (the lower lid rises only over the second half: half shut, the drawn eye keeps its
            # lower outline)
            rise = np.column_stack([was[:, 0], low_y + smoothstep(0.5, 1.0, closed) * (shut - low_y)])
            _drawn_lid(frame, now, was, skin, line, thick, above, rise, low_y)


def _drawn_eye(img: np.ndarray, centre: np.ndarray, iod: float, skin: np.ndarray, line: np.ndarray):
    """A drawn eye's (upper, lower) outlines [33, 2], left to right: the connected region holding
    the pupil of pixels unlike the skin (a cartoon eye: white, iris, outline and lashes), else of
    pixels darker than halfway from the skin to the line colour (an eye drawn as a dark shape among
    several skin shades), or None when neither is an eye-sized blob (it runs into the hair, brows or
    glasses, or is a speck)."""
    h, w = img.shape[:2]
    cx, cy = int(round(centre[0])), int(round(centre[1]))
    r = int(0.6 * iod)
    x0, y0, x1, y1 = max(cx - r, 0), max(cy - r, 0), min(cx + r + 1, w), min(cy + r + 1, h)
    if not (x0 <= cx < x1 and y0 <= cy < y1):
        return None
    roi = img[y0:y1, x0:x1]
    mid = 0.5 * float(skin @ _LUMA + line @ _LUMA)
    for mask in (np.linalg.norm(roi - skin, axis=2) > 40, roi @ _LUMA < mid):
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
        k = labels[cy - y0, cx - x0]
        if k == 0:
            continue
        bx, by, bw, bh, area = stats[k]
        if bx == 0 or by == 0 or bx + bw >= x1 - x0 or by + bh >= y1 - y0 or bw < 0.15 * iod \
                or bh < 0.1 * iod:
            continue
        # (grown a pixel: the outline's antialiased fringe is paler than the test above but shows)
        region = cv2.dilate((labels == k).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        cols = np.flatnonzero(region.any(axis=0))
        top = np.array([np.flatnonzero(region[:, c])[0] for c in cols], np.float64) - 0.5
        bottom = np.array([np.flatnonzero(region[:, c])[-1] for c in cols], np.float64) + 0.5
        xs = np.linspace(cols[0], cols[-1], 33)
        up = np.column_stack([xs + x0, np.interp(xs, cols, top) + y0])
        lo = np.column_stack([xs + x0, np.interp(xs, cols, bottom) + y0])
        return up, lo
    return None


def _drawn_lid(frame: np.ndarray, now: np.ndarray, was: np.ndarray, skin: np.ndarray, line: np.ndarray,
               thick: float, above: float, rise: np.ndarray, low: np.ndarray) -> None:
    """Fill from `above` px over the rest upper margin `was` down to the closing margin `now`, and
    from the rising lower margin `rise` down to the rest lower margin `low` (y per `was` x), with
    `skin`, opaque, and stroke `now` with `line`, `thick` px (antialiased, 0.5 px). Nothing changes
    where the lids have not moved (the corners)."""
    left, right = float(was[0, 0]), float(was[-1, 0])
    x0, x1 = max(int(np.floor(left)), 0), min(int(np.ceil(right)) + 1, frame.shape[1])
    if x1 - x0 < 2:
        return
    xs = np.arange(x0, x1, dtype=np.float32)
    inc = _increasing(was[:, 0])
    y_was = np.interp(xs, inc, was[:, 1])
    y_now = np.maximum(np.interp(xs, inc, now[:, 1]), y_was)
    y_low = np.interp(xs, inc, low)
    y_rise = np.minimum(np.interp(xs, inc, rise[:, 1]), y_low)
    inside = np.clip(np.minimum(xs - left, right - xs) + 0.5, 0, 1)
    drop = (y_now - y_was) * inside
    if drop.max() < 0.3:
        return
    # The fill covers the old lash line only as far as the new one has left it: where the lid moved
    # less than the line is thick, the two lines overlap and nothing is cut out of the old one.
    lift = np.minimum(above + 1.0, drop)
    y0 = max(int(np.floor((y_was - lift).min())) - 1, 0)
    y1 = min(int(np.ceil(y_low.max())) + 2, frame.shape[0])
    if y1 - y0 < 1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None]
    moved = (drop > 0.3)[None, :] * inside[None, :]
    fill = np.clip(ys - (y_was - lift) + 0.5, 0, 1) * np.clip(y_now - ys + 0.5, 0, 1)
    fill = np.maximum(fill, np.clip(ys - y_rise + 0.5, 0, 1) * np.clip(y_low - ys + 0.5, 0, 1)) * moved
    # The stroke tapers toward the corners (no thicker than the lid's drop there, where it lies
    # on the old line) instead of fading: a translucent line reads as a grey smear on ink.
    width = np.minimum(thick, np.maximum(drop, 1.0))[None, :]
    stroke = np.clip(ys - (y_now - width) + 0.5, 0, 1) * np.clip(y_now - ys + 0.5, 0, 1) * moved
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    roi += (skin - roi) * fill[..., None]
    roi += (line - roi) * stroke[..., None]
    frame[y0:y1, x0:x1] = np.clip(np.round(roi), 0, 255).astype(np.uint8)


class _Gaze:
    """eyeLook*: the iris slides inside the current eye opening (lids and corners stay put).

    A smooth displacement centred on the iris, masked to the eye opening: the iris moves by the
    full amount, the white around it stretches or compresses, the corners do not move.
    """

    EYE_RANGE = 0.6  # radians of eye rotation that eyeLook* = 1 stands for (as the expression stage)
    EYEBALL_TO_IRIS = 2.05  # eyeball radius / iris radius (12 mm / 5.9 mm)

    def __init__(self, rest: np.ndarray) -> None:
        self.eyes = []
        for eye, side in ((RIGHT_EYE, "Right"), (LEFT_EYE, "Left")):
            radius = float(np.mean(np.linalg.norm(rest[list(eye.iris[1:]), :2] - rest[eye.iris[0], :2],
                                                  axis=1)))
            # Image-x direction of "out" for this eye: the subject's right eye looks out to image left.
            out_sign = -1.0 if side == "Right" else 1.0
            names = [INDEX[f"eyeLook{d}{side}"] for d in ("In", "Out", "Up", "Down")]
            opening = [eye.corners[0], *eye.upper[0], eye.corners[1], *eye.lower[0][::-1]]
            self.eyes.append((eye, radius, out_sign, names, opening))

    def render(self, frame: np.ndarray, posed: np.ndarray, weights: np.ndarray) -> None:
        for eye, radius, out_sign, (w_in, w_out, w_up, w_down), opening in self.eyes:
            horizontal = (weights[w_out] - weights[w_in]) * out_sign
            vertical = weights[w_down] - weights[w_up]
            reach = self.EYEBALL_TO_IRIS * radius
            d = np.array([reach * np.sin(self.EYE_RANGE * horizontal),
                          0.5 * reach * np.sin(self.EYE_RANGE * vertical)])
            d = np.clip(d, -0.9 * radius, 0.9 * radius)
            if np.abs(d).max() < 0.05:
                continue
            poly = posed[opening]
            x0, y0 = np.floor(poly.min(axis=0)).astype(int) - 2
            x1, y1 = np.ceil(poly.max(axis=0)).astype(int) + 3
            x0, y0 = max(x0, 0), max(y0, 0)
            x1, y1 = min(x1, frame.shape[1]), min(y1, frame.shape[0])
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(mask, [np.round((poly - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, 4)
            if not mask.any():
                continue
            centre = posed[eye.iris[0]] + d
            xs = np.arange(x0, x1, dtype=np.float32)[None, :]
            ys = np.arange(y0, y1, dtype=np.float32)[:, None]
            sigma = 1.3 * radius
            k = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma * sigma))
            map_x = (xs - d[0] * k).astype(np.float32)
            map_y = (ys - d[1] * k).astype(np.float32)
            moved = cv2.remap(frame, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            alpha = (mask.astype(np.float32) / 255)[..., None]
            roi = frame[y0:y1, x0:x1].astype(np.float32)
            frame[y0:y1, x0:x1] = (roi + (moved.astype(np.float32) - roi) * alpha).astype(np.uint8)


def _smoothed_seam(margin: np.ndarray) -> np.ndarray:
    """The lid margin with its inner points averaged 1-2-1 (the clamped seam is jittery)."""
    out = margin.copy()
    out[1:-1] = (margin[:-2] + 2 * margin[1:-1] + margin[2:]) / 4
    return out


def _increasing(x: np.ndarray) -> np.ndarray:
    """Sample positions for np.interp must increase (a rolled head can bend a curve back)."""
    return np.maximum.accumulate(x + np.arange(len(x)) * 1e-3)

