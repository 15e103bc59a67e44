"""ARKit-52 blendshapes as landmark displacements, built by hand on mediapipe's face-mesh topology.

`build_basis(landmarks)` returns B [53, 478, 3] (pixels): the posed mesh is rest + [weights, min(mouthClose, jawOpen)] @ B,
followed by `apply_contact_constraints` (lips and eyelids meet, they never pass through each other).
Amplitudes are in face heights and are scaled by this face's own measurements (lip thickness, eye
opening, mouth width), so one basis works for any photo and output size. Iris points never move
here: the renderer carries the eyeball rigidly and lets the lids cover it.
"""
from __future__ import annotations

import numpy as np

from services.common.domain.arkit import INDEX
from services.render.rig import (
    CHEEKS, CHIN, FOREHEAD_TOP, LEFT_EYE, LIP_LOWER_INNER, LIP_LOWER_RINGS,
    LIP_UPPER_INNER, LIP_UPPER_RINGS, NOSE_WINGS, NUM_LANDMARKS, NUM_MESH, RIGHT_EYE, EyeTopology,
    face_triangles,
)

# Amplitudes at weight 1.0, in face heights (forehead-top to chin) unless named otherwise.
JAW_DROP = 0.17  # lower-lip centre travel at jawOpen=1 (a wide-open mouth)
HINGE_DEPTH = 0.45  # least depth of the jaw hinge behind the lower lip (an adult's is ~0.5)
SMILE_UP, SMILE_OUT = 0.045, 0.10  # corner lift (face heights), corner spread (mouth widths)
BROW_MOVE = 0.032
LID_OVERSHOOT = 0.06  # blink closes past the meeting line so the contact clamp seals the lids

_LIP_UPPER = np.array(LIP_UPPER_RINGS)  # [4 rings (inner -> outer), 11 columns]
_LIP_LOWER = np.array(LIP_LOWER_RINGS)


class FaceFrame:
    """Face-aligned coordinates: u along the eye line (image-right positive), v down, in face heights."""

    def __init__(self, landmarks: np.ndarray) -> None:
        pts = landmarks[:, :2].astype(np.float64)
        self.right_eye = pts[list(RIGHT_EYE.corners)].mean(axis=0)
        self.left_eye = pts[list(LEFT_EYE.corners)].mean(axis=0)
        axis = self.left_eye - self.right_eye
        self.u_axis = axis / np.linalg.norm(axis)
        self.v_axis = np.array([-self.u_axis[1], self.u_axis[0]])
        self.origin = (self.right_eye + self.left_eye) / 2
        self.face_height = float(np.linalg.norm(pts[FOREHEAD_TOP] - pts[CHIN]))
        rel = (pts - self.origin) / self.face_height
        self.u = rel @ self.u_axis
        self.v = rel @ self.v_axis
        self.z = (landmarks[:, 2] - landmarks[:NUM_MESH, 2].mean()) / self.face_height

    def to_pixels(self, du: np.ndarray, dv: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """Face-frame displacements [N] x 3 -> image displacements [N, 3] in pixels."""
        xy = np.outer(du, self.u_axis) + np.outer(dv, self.v_axis)
        return np.concatenate([xy, dz[:, None]], axis=1) * self.face_height


def smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# Not an ARKit channel: the part of mouthClose that brings the lips together over the open jaw.
# It is weighted by min(mouthClose, jawOpen) (the renderer does that), so mouthClose over a closed
# jaw only seals the photo's own rest opening instead of pushing the lower lip up into the upper.
CLOSE_OVER_JAW = len(INDEX)


def build_basis(landmarks: np.ndarray) -> np.ndarray:
    """Displacement basis [53, 478, 3] in pixels for a face with these rest landmarks [478, 3]:
    the ARKit-52 shapes in order, then CLOSE_OVER_JAW."""
    f = FaceFrame(landmarks)
    basis = np.zeros((len(INDEX) + 1, NUM_LANDMARKS, 3))
    builder = _Builder(f)
    for name, (du, dv, dz) in builder.shapes().items():
        d = f.to_pixels(du, dv, dz)
        d[NUM_MESH:] = 0.0  # iris: moved with the eyeball, never by the lids
        basis[CLOSE_OVER_JAW if name == "_closeOverJaw" else INDEX[name]] = d
    return basis.astype(np.float32)


class _Builder:
    """Each shape is (du, dv, dz) over all landmarks, in face heights."""

    def __init__(self, f: FaceFrame) -> None:
        self.f = f
        self.n = NUM_LANDMARKS
        u, v = f.u, f.v
        self.mouth_centre = np.array([(u[13] + u[14]) / 2, (v[13] + v[14]) / 2])
        self.mouth_width = float(abs(u[291] - u[61]))
        self.lip_s = (u - self.mouth_centre[0]) / (self.mouth_width / 2)  # -1 .. 1 across the lips
        self.lip_upper = set(_LIP_UPPER.ravel()) - {78, 308, 62, 292, 76, 306, 61, 291}
        self.lip_lower = set(_LIP_LOWER.ravel()) - {78, 308, 62, 292, 76, 306, 61, 291}
        self.lip_corners = {78, 308, 62, 292, 76, 306, 61, 291}
        self.lip_all = self.lip_upper | self.lip_lower | self.lip_corners
        self.jaw_d = self._jaw_rotation()

    # -- helpers ---------------------------------------------------------------------------------
    def zeros(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return np.zeros(self.n), np.zeros(self.n), np.zeros(self.n)

    def mask(self, indices) -> np.ndarray:
        m = np.zeros(self.n, dtype=bool)
        m[list(indices)] = True
        return m

    def near(self, centre: np.ndarray, sigma_u: float, sigma_v: float | None = None) -> np.ndarray:
        """Gaussian falloff around a face-frame point, over every landmark."""
        sigma_v = sigma_u if sigma_v is None else sigma_v
        return np.exp(-0.5 * (((self.f.u - centre[0]) / sigma_u) ** 2
                              + ((self.f.v - centre[1]) / sigma_v) ** 2))

    def point(self, index: int) -> np.ndarray:
        return np.array([self.f.u[index], self.f.v[index]])

    def side_weight(self, side: int) -> np.ndarray:
        """1 on the given side of the mouth (+1 = subject's left = image right), 0.5 at the middle."""
        return smoothstep(-0.35, 0.35, side * self.lip_s)

    def mesh_only(self, w: np.ndarray) -> np.ndarray:
        w = w.copy()
        w[NUM_MESH:] = 0
        return w

    # -- jaw ---------------------------------------------------------------------------------------
    def jaw_weight(self) -> np.ndarray:
        """How much each point rides on the mandible: lower lip/chin 1, upper lip/nose 0."""
        f = self.f
        seam_v = self.mouth_centre[1]
        w = smoothstep(seam_v - 0.015, seam_v + 0.11, f.v)
        # Cheek skin above the jaw line stretches rather than rides: fade laterally with height.
        w *= 1.0 - 0.5 * smoothstep(0.25, 0.45, np.abs(f.u)) * smoothstep(seam_v + 0.12, seam_v, f.v)
        w[list(self.lip_upper)] = 0.0
        # The lower lip rides fully in the middle, less toward the corners (an oval opening).
        lower = list(self.lip_lower)
        w[lower] = 0.42 + 0.58 * smoothstep(1.0, 0.45, np.abs(self.lip_s[lower]))
        w[list(self.lip_corners)] = 0.42
        return self.mesh_only(w)

    def _jaw_rotation(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """jawOpen=1: rotate about the ear axis so the lower lip drops JAW_DROP."""
        f = self.f
        pivot_v = (f.v[234] + f.v[454]) / 2
        # The hinge sits at least HINGE_DEPTH behind the lower lip: mediapipe's depth is flat on
        # some faces (inked illustrations: 0.32-0.35), and a hinge that close cannot drop the lip
        # JAW_DROP at any angle (the old Newton solve then opened the jaw half as far, or swung
        # it upward). Rotating about a deeper hinge keeps the whole jaw consistent.
        lip_v = f.v[14] - pivot_v
        reach = np.sqrt(max((JAW_DROP + lip_v) ** 2 - lip_v ** 2, 0.0))
        pivot_z = max((f.z[234] + f.z[454]) / 2, f.z[14] + max(HINGE_DEPTH, 1.15 * reach))
        rel_v = f.v - pivot_v
        rel_z = np.minimum(f.z - pivot_z, 0.0)  # nothing behind the hinge
        # The lip at (lip_v, lip_z) drops lip_v (cos t - 1) - lip_z sin t = A sin(t + phi) - lip_v.
        # Points nearer the hinge (the jaw angle, by the ears) drop less, as on a real mandible.
        lip_z = rel_z[14]
        radius, phi = np.hypot(lip_v, lip_z), np.arctan2(lip_v, -lip_z)
        theta = float(np.arcsin(min((JAW_DROP + lip_v) / radius, 1.0)) - phi)
        w = self.jaw_weight()
        dv = w * (rel_v * (np.cos(theta) - 1) - rel_z * np.sin(theta))
        dz = w * (rel_v * np.sin(theta) + rel_z * (np.cos(theta) - 1))
        # mediapipe depth is noisy point to point; neighbouring skin points dropping by different
        # amounts fold triangles (the chin passing its own underside). Smooth over the mesh,
        # keeping the lips exact (their seam must stay sharp).
        keep = self.mask(self.lip_all)
        dv, dz = _mesh_smooth(dv, keep, 4), _mesh_smooth(dz, keep, 4)
        return np.zeros(self.n), dv, dz

    # -- shapes ------------------------------------------------------------------------------------
    def shapes(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        out["jawOpen"] = self.jaw_d
        out.update(self.jaw_sideways())
        out.update(self.lips())
        out.update(self.mouth_corners())
        inner_up = []
        for eye, side in ((RIGHT_EYE, "Right"), (LEFT_EYE, "Left")):
            out.update(self.eyelids(eye, side))
            brow = self.brow(eye, side)
            inner_up.append(brow.pop("browInnerUp"))
            out.update(brow)
        # browInnerUp is one ARKit channel for both brows: the two halves add.
        out["browInnerUp"] = tuple(a + b for a, b in zip(*inner_up))
        out.update(self.cheeks_and_nose())
        return out

    def jaw_sideways(self):
        w = self.jaw_weight()
        shapes = {}
        for name, sign in (("jawLeft", 1), ("jawRight", -1)):
            du, dv, dz = self.zeros()
            du[:] = sign * 0.045 * w
            shapes[name] = (du, dv, dz)
        du, dv, dz = self.zeros()
        dz[:] = -0.04 * w
        dv[:] = 0.008 * w
        shapes["jawForward"] = (du, dv, dz)
        return shapes

    def lips(self):
        f, shapes = self.f, {}
        upper_inner, lower_inner = np.array(LIP_UPPER_INNER), np.array(LIP_LOWER_INNER)
        gap = f.v[lower_inner] - f.v[upper_inner]  # rest opening per column (0 for closed lips)
        jaw_dv = self.jaw_d[1]

        # mouthClose: lips meet over an open jaw (ARKit uses it together with jawOpen): the rest
        # opening here, the jaw's travel in _closeOverJaw (see CLOSE_OVER_JAW).
        for name, travel in (("mouthClose", gap), ("_closeOverJaw", jaw_dv[lower_inner])):
            du, dv, dz = self.zeros()
            for col in range(1, 10):
                dv[_LIP_UPPER[:, col]] += 0.3 * travel[col]
                dv[_LIP_LOWER[:, col]] -= 0.7 * travel[col] + (0.01 if name == "mouthClose" else 0.0)
            shapes[name] = (du, dv, dz)

        # mouthPress: seal the rest opening and thin both lips, per side.
        thick_u = f.v[_LIP_UPPER[0]] - f.v[_LIP_UPPER[3]]
        thick_l = f.v[_LIP_LOWER[3]] - f.v[_LIP_LOWER[0]]
        for name, side in (("mouthPressLeft", 1), ("mouthPressRight", -1)):
            du, dv, dz = self.zeros()
            for col in range(1, 10):
                for ring in range(4):
                    thin = ring / 3 * 0.18
                    dv[_LIP_UPPER[ring, col]] += 0.5 * gap[col] + 0.006 + thin * thick_u[col]
                    dv[_LIP_LOWER[ring, col]] -= 0.5 * gap[col] + 0.006 + thin * thick_l[col]
            dv *= self.side_weight(side)
            shapes[name] = (du, dv, dz)

        lip = self.mask(self.lip_all).astype(float)
        around = self.mesh_only(self.near(self.mouth_centre, 0.22, 0.16)) * (1 - lip)
        s = np.clip(self.lip_s, -1.2, 1.2)
        mw = self.mouth_width
        # mouthFunnel: corners in, lips flare and part into a rounded opening.
        du, dv, dz = self.zeros()
        du += -0.14 * mw * s * (lip + 0.5 * around)
        dv[upper_inner] -= 0.02 * (1 - s[upper_inner] ** 2)
        dv[lower_inner] += 0.035 * (1 - s[lower_inner] ** 2)
        dv[_LIP_UPPER[3]] -= 0.008
        dv[_LIP_LOWER[3]] += 0.012
        dz -= 0.03 * (lip + 0.5 * around)
        shapes["mouthFunnel"] = (du, dv, dz)
        # mouthPucker: corners in hard, lips pushed together and forward.
        du, dv, dz = self.zeros()
        du += -0.22 * mw * s * (lip + 0.6 * around)
        for col in range(1, 10):
            dv[_LIP_UPPER[:, col]] += 0.5 * gap[col]
            dv[_LIP_LOWER[:, col]] -= 0.5 * gap[col]
        dv[_LIP_UPPER[3]] -= 0.006
        dv[_LIP_LOWER[3]] += 0.008
        dz -= 0.05 * (lip + 0.5 * around)
        shapes["mouthPucker"] = (du, dv, dz)
        # mouthLeft/Right: the whole mouth slides sideways.
        for name, sign in (("mouthLeft", 1), ("mouthRight", -1)):
            du, dv, dz = self.zeros()
            du += sign * 0.09 * mw * (lip + 0.8 * around)
            shapes[name] = (du, dv, dz)
        # Roll: the outer lip edge rolls in toward the seam (lip looks thinner).
        for name, rings, thick, sign in (("mouthRollUpper", _LIP_UPPER, thick_u, 1),
                                         ("mouthRollLower", _LIP_LOWER, thick_l, -1)):
            du, dv, dz = self.zeros()
            for col in range(1, 10):
                for ring in range(4):
                    dv[rings[ring, col]] += sign * (ring / 3 * 0.6 * thick[col] + 0.003)
            shapes[name] = (du, dv, dz)
        # Shrug: lower lip and chin boss push up / upper lip lifts.
        du, dv, dz = self.zeros()
        below = self.mesh_only(self.near(self.point(17) + (0, 0.06), 0.12, 0.08)) * (1 - lip)
        dv[list(self.lip_lower)] -= 0.022
        dv -= 0.012 * below
        shapes["mouthShrugLower"] = (du, dv, dz)
        du, dv, dz = self.zeros()
        dv[list(self.lip_upper)] -= 0.014
        shapes["mouthShrugUpper"] = (du, dv, dz)
        # Lower lip down / upper lip up (teeth show), per side.
        above = self.mesh_only(self.near(self.point(0) + (0, -0.03), 0.12, 0.05)) * (1 - lip)
        chin = self.mesh_only(self.near(self.point(17) + (0, 0.04), 0.14, 0.06)) * (1 - lip)
        for side_name, side in (("Left", 1), ("Right", -1)):
            sw = self.side_weight(side)
            du, dv, dz = self.zeros()
            shape = np.clip(1 - self.lip_s ** 2, 0, 1) * self.mask(self.lip_lower)
            dv += sw * (0.05 * shape + 0.012 * chin)
            shapes[f"mouthLowerDown{side_name}"] = (du, dv, dz)
            du, dv, dz = self.zeros()
            shape = np.clip(1 - (self.lip_s / 1.1) ** 2, 0, 1) * self.mask(self.lip_upper)
            dv -= sw * (0.035 * shape + 0.012 * above)
            shapes[f"mouthUpperUp{side_name}"] = (du, dv, dz)
        return shapes

    def mouth_corners(self):
        shapes = {}
        lip = self.mask(self.lip_all).astype(float)
        mw = self.mouth_width
        for side_name, side, corner in (("Left", 1, 291), ("Right", -1, 61)):
            c = self.point(corner)
            # Lip points follow their corner by closeness along the lip; skin follows with a falloff.
            along = np.clip((side * self.lip_s), 0, 1.2) ** 1.5 * lip
            skin = self.mesh_only(self.near(c, 0.13, 0.16)) * (1 - lip)
            k = along + 0.75 * skin

            def corner_shape(du_mw: float, dv_fh: float, w=k):
                du, dv, dz = self.zeros()
                du += side * du_mw * mw * w
                dv += dv_fh * w
                return du, dv, dz

            smile = corner_shape(SMILE_OUT, -SMILE_UP)
            cheek = self.mesh_only(self.near(c + (side * 0.05, -0.12), 0.1, 0.08)) * (1 - lip)
            smile[1][:] -= 0.012 * cheek  # the cheek bunches up above a smile
            shapes[f"mouthSmile{side_name}"] = smile
            shapes[f"mouthFrown{side_name}"] = corner_shape(0.02, 0.035)
            shapes[f"mouthDimple{side_name}"] = corner_shape(0.07, 0.0)
            stretch = corner_shape(0.10, 0.012)
            lower = np.clip(1 - self.lip_s ** 2, 0, 1) * self.mask(self.lip_lower)
            stretch[1][:] += 0.012 * lower * self.side_weight(side)
            shapes[f"mouthStretch{side_name}"] = stretch
        return shapes

    def eyelids(self, eye: EyeTopology, side: str):
        f, shapes = self.f, {}
        up = [np.array(r) for r in eye.upper]
        lo = [np.array(r) for r in eye.lower]
        gap = f.v[lo[0]] - f.v[up[0]]  # per-column eye opening, face heights

        du, dv, dz = self.zeros()
        close_upper = (0.82 + LID_OVERSHOOT) * gap
        dv[up[0]] += close_upper
        # The skin above the margin stretches; rings further up barely move (glasses rims,
        # brows and the crease would visibly bend).
        dv[up[1]] += 0.3 * close_upper
        dv[up[2]] += 0.03 * close_upper
        dv[lo[0]] -= (0.18 + LID_OVERSHOOT) * gap
        dv[lo[1]] -= 0.06 * gap
        shapes[f"eyeBlink{side}"] = (du, dv, dz)

        du, dv, dz = self.zeros()
        dv[lo[0]] -= 0.28 * gap
        dv[lo[1]] -= 0.18 * gap
        dv[lo[2]] -= 0.08 * gap
        dv[list(eye.cheek)] -= 0.04 * gap.mean()
        dv[up[0]] += 0.10 * gap
        dv[up[1]] += 0.05 * gap
        shapes[f"eyeSquint{side}"] = (du, dv, dz)

        du, dv, dz = self.zeros()
        dv[up[0]] -= 0.28 * gap
        dv[up[1]] -= 0.16 * gap
        dv[up[2]] -= 0.05 * gap
        dv[lo[0]] += 0.05 * gap
        shapes[f"eyeWide{side}"] = (du, dv, dz)

        # The iris itself is moved by the renderer (inside the opening); the lids follow vertical gaze.
        du, dv, dz = self.zeros()
        dv[up[0]] += 0.25 * gap
        dv[up[1]] += 0.12 * gap
        dv[lo[0]] += 0.05 * gap
        shapes[f"eyeLookDown{side}"] = (du, dv, dz)
        du, dv, dz = self.zeros()
        dv[up[0]] -= 0.12 * gap
        dv[up[1]] -= 0.08 * gap
        shapes[f"eyeLookUp{side}"] = (du, dv, dz)
        for name in ("eyeLookIn", "eyeLookOut"):
            shapes[f"{name}{side}"] = self.zeros()
        return shapes

    def brow(self, eye: EyeTopology, side: str):
        f, shapes = self.f, {}
        brow = list(eye.brow_upper) + list(eye.brow_lower)
        inner_to_outer = np.abs(f.u[brow])
        t = (inner_to_outer - inner_to_outer.min()) / max(1e-6, np.ptp(inner_to_outer))  # 0 inner
        sign = 1 if side == "Left" else -1
        centre = np.array([f.u[brow].mean(), f.v[brow].mean()])
        # Forehead above the brow follows with a falloff; the lids below only a little.
        forehead = self.mesh_only(self.near(centre + (0, -0.08), 0.14, 0.1))
        forehead[brow] = 0
        forehead[f.v > centre[1]] = 0
        lid2 = list(eye.upper[2]) + list(eye.ring_corners[1])
        lid1 = list(eye.upper[1])

        def lift(profile: np.ndarray, amount: float, inward: float = 0.0):
            du, dv, dz = self.zeros()
            dv[brow] += amount * profile
            du[brow] += -sign * inward * profile
            w_fore = forehead * (profile.mean())
            dv += 0.55 * amount * w_fore
            dv[lid2] += 0.35 * amount * profile.mean()
            dv[lid1] += 0.12 * amount * profile.mean()
            return du, dv, dz

        shapes[f"browDown{side}"] = lift(1 - 0.4 * t, BROW_MOVE, inward=0.012)
        shapes[f"browOuterUp{side}"] = lift(0.25 + 0.75 * t, -BROW_MOVE)
        shapes["browInnerUp"] = lift(1 - 0.75 * t, -BROW_MOVE * 1.1, inward=0.004)
        return shapes

    def cheeks_and_nose(self):
        f, shapes = self.f, {}
        du, dv, dz = self.zeros()
        for side, key in ((-1, "right"), (1, "left")):
            c = np.array([f.u[list(CHEEKS[key])].mean(), f.v[list(CHEEKS[key])].mean()])
            w = self.mesh_only(self.near(c, 0.12, 0.12))
            du += side * 0.03 * w
        shapes["cheekPuff"] = (du, dv, dz)
        for side_name, key, eye in (("Left", "left", LEFT_EYE), ("Right", "right", RIGHT_EYE)):
            c = np.array([f.u[list(CHEEKS[key])].mean(), f.v[list(CHEEKS[key])].mean() - 0.04])
            du, dv, dz = self.zeros()
            w = self.mesh_only(self.near(c, 0.1, 0.08))
            w[list(eye.upper[0]) + list(eye.upper[1]) + list(eye.upper[2])] = 0
            dv -= 0.018 * w
            dv[list(eye.lower[0])] -= 0.006
            shapes[f"cheekSquint{side_name}"] = (du, dv, dz)
            wing = np.array([f.u[list(NOSE_WINGS[key])].mean(), f.v[list(NOSE_WINGS[key])].mean()])
            du, dv, dz = self.zeros()
            w = self.mesh_only(self.near(wing, 0.06, 0.06))
            dv -= 0.016 * w
            dv[list(self.lip_upper)] -= 0.006 * self.side_weight(1 if side_name == "Left" else -1)[
                list(self.lip_upper)]
            shapes[f"noseSneer{side_name}"] = (du, dv, dz)
        du, dv, dz = self.zeros()
        dv[list(self.lip_lower)] += 0.012
        shapes["tongueOut"] = (du, dv, dz)
        return shapes


def _mesh_smooth(values: np.ndarray, keep: np.ndarray, iterations: int) -> np.ndarray:
    """Average each mesh point with its tessellation neighbours (points in `keep` stay fixed)."""
    adjacency = _mesh_adjacency()
    out = values.copy()
    for _ in range(iterations):
        avg = adjacency @ out[:NUM_MESH]
        out[:NUM_MESH] = np.where(keep[:NUM_MESH], out[:NUM_MESH], 0.5 * out[:NUM_MESH] + 0.5 * avg)
    return out


def _mesh_adjacency() -> np.ndarray:
    """Row-normalised adjacency [468, 468] of mediapipe's tessellation."""
    adjacency = np.zeros((NUM_MESH, NUM_MESH))
    for a, b, c in face_triangles():
        for i, j in ((a, b), (b, c), (a, c)):
            adjacency[i, j] = adjacency[j, i] = 1.0
    return adjacency / np.maximum(adjacency.sum(axis=1, keepdims=True), 1.0)


class ContactConstraints:
    """Lips and eyelids touch but never pass through each other (posed mesh, before head pose).

    Where a lower inner-lip point ends above its upper partner, both lips' whole columns shift to
    meet at the midpoint (lip thickness is kept); eyelid margins meet the same way.
    """

    def __init__(self, landmarks: np.ndarray) -> None:
        f = FaceFrame(landmarks)
        self.v_axis = f.v_axis
        self.lip_upper = _LIP_UPPER[:, 1:10]  # [4, 9]: corners never need it
        self.lip_lower = _LIP_LOWER[:, 1:10]
        self.lid_upper = np.array([RIGHT_EYE.upper[0], LEFT_EYE.upper[0]]).ravel()
        self.lid_lower = np.array([RIGHT_EYE.lower[0], LEFT_EYE.lower[0]]).ravel()

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Fix `points` [478, >=2] in place and return it."""
        va = self.v_axis
        v = points[:, :2] @ va
        overlap = np.maximum(0.0, v[self.lip_upper[0]] - v[self.lip_lower[0]])  # [9]
        if overlap.any():
            half = overlap / 2
            points[self.lip_upper, :2] -= half[None, :, None] * va
            points[self.lip_lower, :2] += half[None, :, None] * va
        overlap = np.maximum(0.0, v[self.lid_upper] - v[self.lid_lower])
        if overlap.any():
            half = overlap / 2
            points[self.lid_upper, :2] -= half[:, None] * va
            points[self.lid_lower, :2] += half[:, None] * va
        return points
