"""Output framing: frame size from (shorter side, aspect ratio), fit cover/contain, and the still
"stage" the animated face is pasted into (photo placed in the frame, padding, background, matte).

The face is always animated in a square rig crop whose pixels are exactly the stage's pixels at an
integer offset (same scale, same sampling), so pasting the rendered square back is seamless and
costs one copy. Everything outside the square is computed once per photo.

Geometry (photo pixels -> frame pixels): frame_xy = (photo_xy - (wx0, wy0)) * scale.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from services.common.domain.errors import InputError

ASPECTS: dict[str, tuple[int, int]] = {"1:1": (1, 1), "9:16": (9, 16), "16:9": (16, 9), "4:5": (4, 5)}
FITS = ("cover", "contain")
MIN_SIZE, MAX_SIZE = 128, 1080
# In a tall frame (9:16, 4:5) this share of the extra height goes above the face square, the rest
# below it (shoulders and body rather than sky).
TALL_EXTRA_ABOVE = 0.2
_HEX = re.compile(r"^#?([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class Background:
    """What replaces the photo's background: a colour, an image, or transparency (alpha output)."""

    color: tuple[int, int, int] | None = None
    image: bytes | None = None  # encoded image bytes (any format load_photo reads)
    transparent: bool = False

    @classmethod
    def parse(cls, text: str, field_name: str = "background") -> "Background":
        """'#RRGGBB', 'transparent', or a path to an image file."""
        text = text.strip()
        if text.lower() == "transparent":
            return cls(transparent=True)
        if m := _HEX.match(text):
            return cls(color=parse_color(m.group(0), field_name))
        path = Path(text)
        if path.is_file():
            return cls(image=path.read_bytes())
        raise InputError(field_name, f"{text!r} is not '#RRGGBB', 'transparent' or an image file")


def parse_color(text: str, field_name: str = "background") -> tuple[int, int, int]:
    m = _HEX.match(text.strip())
    if not m:
        raise InputError(field_name, f"colour {text!r} must be '#RRGGBB'")
    v = int(m.group(1), 16)
    return (v >> 16) & 255, (v >> 8) & 255, v & 255


@dataclass(frozen=True)
class FrameSpec:
    size: int = 512  # the shorter side, pixels
    aspect: str = "1:1"
    fit: str = "cover"
    background: Background | None = None  # None: the photo's own background
    face_at: tuple[float, float] | None = None  # photo pixels: the face animated (None: the largest)

    def validate(self) -> None:
        if self.face_at is not None and (len(self.face_at) != 2 or not all(
                isinstance(v, (int, float)) and np.isfinite(v) and v >= 0 for v in self.face_at)):
            raise InputError("face_at", f"must be an (x, y) point in photo pixels, got {self.face_at!r}")
        if not isinstance(self.size, int) or not MIN_SIZE <= self.size <= MAX_SIZE or self.size % 2:
            raise InputError("size", f"must be an even number of pixels from {MIN_SIZE} to {MAX_SIZE}, "
                                     f"got {self.size}")
        if self.aspect not in ASPECTS:
            raise InputError("aspect", f"unknown aspect ratio {self.aspect!r}; supported: {', '.join(ASPECTS)}")
        if self.fit not in FITS:
            raise InputError("fit", f"unknown fit {self.fit!r}; supported: {', '.join(FITS)}")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height), both even; the shorter side is `size`."""
        a, b = ASPECTS[self.aspect]
        long = int(round(self.size * max(a, b) / min(a, b) / 2)) * 2
        return (long, self.size) if a > b else (self.size, long)

    @property
    def is_plain(self) -> bool:
        """The historical framing: the square face crop itself is the frame (no stage needed)."""
        return self.aspect == "1:1" and self.fit == "cover" and self.background is None

    @property
    def alpha(self) -> bool:
        return self.background is not None and self.background.transparent

    def key(self) -> str:
        """Short stable text for cache keys."""
        bg = "photo"
        if self.background is not None:
            b = self.background
            bg = ("transparent" if b.transparent else "%02x%02x%02x" % b.color if b.color
                  else "img" + hashlib.sha256(b.image).hexdigest()[:16] if b.image is not None else "photo")
        at = "" if self.face_at is None else "-at%.0fx%.0f" % tuple(self.face_at)
        return f"{self.size}-{self.aspect.replace(':', 'x')}-{self.fit}-{bg}{at}"


@dataclass
class Stage:
    """The still frame around the animated face square."""

    base: np.ndarray  # [H, W, 3] uint8: the frame with no animation (background already applied)
    offset: tuple[int, int]  # (x, y) of the rig square's top-left corner in the frame (may be < 0)
    matte: np.ndarray | None = None  # [H, W] uint8 person alpha; set when the background is replaced
    background: np.ndarray | None = None  # [H, W, 3] uint8 what shows where matte < 255
    transparent: bool = False
    warnings: list[str] = field(default_factory=list)
    body: np.ndarray | None = None  # [H, W] uint8 person alpha for breathing (services.render.body)
    square: int = 0  # the rig square's side in the frame when it is rigged upscaled (0: the rig's size)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.base.shape[1]), int(self.base.shape[0])

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"stage_base": self.base, "stage_offset": np.array(self.offset, np.int64),
               "stage_transparent": np.array(self.transparent)}
        if self.matte is not None:
            out["stage_matte"] = self.matte
        if self.background is not None:
            out["stage_background"] = self.background
        if self.body is not None:
            out["stage_body"] = self.body
        if self.square:
            out["stage_square"] = np.array(self.square, np.int64)
        return out

    @classmethod
    def from_arrays(cls, npz) -> "Stage | None":
        if "stage_base" not in npz:
            return None
        return cls(base=npz["stage_base"], offset=tuple(int(v) for v in npz["stage_offset"]),
                   matte=npz["stage_matte"] if "stage_matte" in npz else None, background=npz["stage_background"] if "stage_background" in npz else None,
                   transparent=bool(npz["stage_transparent"]),
                   body=npz["stage_body"] if "stage_body" in npz else None,
                   square=int(npz["stage_square"]) if "stage_square" in npz else 0)


@dataclass(frozen=True)
class Window:
    """A frame placed over the photo: frame_xy = (photo_xy - (x0, y0)) * scale."""

    x0: float
    y0: float
    scale: float
    width: int
    height: int
    square_offset: tuple[int, int]  # rig square top-left in frame pixels
    square_size: int  # rig square side in frame pixels


def plan_window(photo_shape: tuple[int, ...], square: tuple[float, float, float],
                spec: FrameSpec) -> Window:
    """Where the frame sits on the photo, given the face square (x0, y0, side) in photo pixels.

    cover: the frame is the face square widened to the aspect ratio and slid onto the photo; the
    face square maps to exactly `size` pixels. When the photo is too narrow (or too short) for that
    window, the frame zooms in around the face (a tighter face square) until the window fits on the
    photo: cover never pads. contain: the whole photo is scaled into the frame, centred.
    """
    ph, pw = photo_shape[:2]
    W, H = spec.frame_size
    sx0, sy0, side = square
    if spec.fit == "cover":
        scale = min(W, H) / side
        need = max(W / pw, H / ph)  # the smallest scale at which the frame lies on the photo
        if need > scale:
            tight = min(W, H) / need  # the zoomed face square, same centre
            sx0, sy0, side, scale = sx0 + (side - tight) / 2, sy0 + (side - tight) / 2, tight, need
        # A face near the photo's edge: the face square slides onto the photo (off centre) rather
        # than leave a margin to fill.
        sx0 = min(max(sx0, 0.0), max(pw - side, 0.0))
        sy0 = min(max(sy0, 0.0), max(ph - side, 0.0))
        ww, wh = W / scale, H / scale
        wx0 = sx0 - (ww - side) / 2
        wy0 = sy0 - (wh - side) * (TALL_EXTRA_ABOVE if H > W else 0.5)
        wx0 = _slide(wx0, ww, pw, sx0, side)
        wy0 = _slide(wy0, wh, ph, sy0, side)
        ox, oy = round((sx0 - wx0) * scale), round((sy0 - wy0) * scale)
        return Window(sx0 - ox / scale, sy0 - oy / scale, scale, W, H, (ox, oy), min(W, H))
    fit_scale = min(W / pw, H / ph)
    square_px = max(2, int(side * fit_scale) // 2 * 2)  # even, and never larger than the fit
    scale = square_px / side
    wx0 = -(W - pw * scale) / 2 / scale
    wy0 = -(H - ph * scale) / 2 / scale
    ox, oy = round((sx0 - wx0) * scale), round((sy0 - wy0) * scale)
    return Window(sx0 - ox / scale, sy0 - oy / scale, scale, W, H, (ox, oy), square_px)


def _slide(start: float, length: float, limit: float, keep0: float, keep_len: float) -> float:
    """Move [start, start+length] inside [0, limit] when possible, keeping [keep0, keep0+keep_len]."""
    if length <= limit:
        start = min(max(start, 0.0), limit - length)
    else:
        start = (limit - length) / 2  # centre the photo's overhang on both sides
    return min(max(start, keep0 + keep_len - length), keep0)


def crop_window(photo: np.ndarray, x0: float, y0: float, scale: float, width: int, height: int,
                fill: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [height, width, 3], coverage [height, width] uint8 255 = on the photo).

    Outside the photo: with `fill`, a blurred edge-replicate fill (soft gradients of the photo's edge
    colours); otherwise the replicated edge, to be covered by padding.
    """
    h, w = photo.shape[:2]
    src = photo
    if scale < 0.75:  # downscale with area averaging first: warpAffine alone would alias
        src = cv2.resize(photo, (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
        sx, sy = src.shape[1] / w, src.shape[0] / h
        matrix = np.array([[scale / sx, 0, -x0 * scale], [0, scale / sy, -y0 * scale]])
    else:
        matrix = np.array([[scale, 0, -x0 * scale], [0, scale, -y0 * scale]])
    interp = cv2.INTER_LANCZOS4 if scale > 1.2 else cv2.INTER_LINEAR
    out = cv2.warpAffine(src, matrix, (width, height), flags=interp, borderMode=cv2.BORDER_REPLICATE)
    inside = cv2.warpAffine(np.full(src.shape[:2], 255, np.uint8), matrix, (width, height),
                            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if fill and inside.min() < 255:
        side = min(width, height)
        blurred = cv2.GaussianBlur(out, (0, 0), sigmaX=side / 12)
        alpha = cv2.GaussianBlur(inside, (0, 0), sigmaX=side / 200).astype(np.float32)[..., None] / 255
        out = (out * alpha + blurred * (1 - alpha)).astype(np.uint8)
    return out, inside


def take_square(frame: np.ndarray, x: int, y: int, size: int) -> np.ndarray:
    """frame[y:y+size, x:x+size] with replicated edges where the square leaves the frame."""
    h, w = frame.shape[:2]
    pad = (max(0, -y), max(0, y + size - h), max(0, -x), max(0, x + size - w))
    if any(pad):
        frame = cv2.copyMakeBorder(frame, *pad, cv2.BORDER_REPLICATE)
        x, y = x + pad[2], y + pad[0]
    return np.ascontiguousarray(frame[y:y + size, x:x + size])


def build_stage(photo: np.ndarray, window: Window, spec: FrameSpec,
                segment=None) -> tuple[Stage, np.ndarray]:
    """(the still frame for `window`, the photo layer the face is animated on).

    The photo layer is the framed photo with padding but before any background replacement: the
    warp moves its pixels and the (equally warped) matte then composites them over the background.
    segment: RGB -> person alpha [H, W] float 0..1 (services.render.segment.person_matte).
    """
    W, H = window.width, window.height
    base, inside = crop_window(photo, window.x0, window.y0, window.scale, W, H,
                               fill=spec.fit == "cover")
    bg_spec = spec.background
    warnings: list[str] = []
    if spec.fit == "contain":
        # Padding: the chosen background, else a blurred, dimmed cover of the photo (still).
        if bg_spec is None:
            cover_scale = max(W / photo.shape[1], H / photo.shape[0])
            cx, cy = photo.shape[1] / 2 - W / 2 / cover_scale, photo.shape[0] / 2 - H / 2 / cover_scale
            pad, _ = crop_window(photo, cx, cy, cover_scale, W, H)
            pad = (cv2.GaussianBlur(pad, (0, 0), sigmaX=min(W, H) / 30) * 0.6).astype(np.uint8)
        else:
            pad = background_plate(bg_spec, W, H)
        a = (inside.astype(np.float32) / 255)[..., None]
        base = (base * a + pad * (1 - a)).round().astype(np.uint8)
    from services.render.body import breathing_enabled  # (import cycle: body -> basis -> rig imports this module)

    if bg_spec is None and not breathing_enabled():
        return Stage(base=base, offset=window.square_offset, warnings=warnings), base
    if segment is None:
        from services.render.segment import person_matte as segment  # (import cycle: as body above)
    matte = segment(base)
    if spec.fit == "contain":  # padding is never the person (cover's filled margin may be)
        matte = matte * (inside.astype(np.float32) / 255)
    matte8 = np.clip(matte * 255 + 0.5, 0, 255).astype(np.uint8)
    body = matte8.copy() if matte8.max() >= 128 else None  # no person found: no breathing
    if bg_spec is None:  # the matte only drives breathing (services.render.body)
        return Stage(base=base, offset=window.square_offset, warnings=warnings, body=body), base
    if matte8.max() < 128:
        warnings.append("no person found to separate from the background; the photo is kept whole")
        matte8[:] = np.where(inside > 0, 255, 0).astype(np.uint8)
    plate = background_plate(bg_spec, W, H)
    # Transparent output keeps the photo's colours under the alpha (no dark fringe when composited).
    composed = base if bg_spec.transparent else _over(base, matte8, plate)
    return Stage(base=composed, offset=window.square_offset, matte=matte8, background=plate,
                 transparent=bg_spec.transparent, warnings=warnings, body=body), base


def background_plate(bg: Background, width: int, height: int) -> np.ndarray:
    if bg.color is not None:
        return np.broadcast_to(np.array(bg.color, np.uint8), (height, width, 3)).copy()
    if bg.image is not None:
        from services.render.photo import load_photo  # (Pillow: the gateway imports this module, via spec, without it)

        try:
            img = load_photo(bg.image)
        except InputError as exc:
            raise InputError("background", exc.message) from None
        scale = max(width / img.shape[1], height / img.shape[0])  # cover the frame
        x0 = img.shape[1] / 2 - width / 2 / scale
        y0 = img.shape[0] / 2 - height / 2 / scale
        return crop_window(img, x0, y0, scale, width, height)[0]
    return np.zeros((height, width, 3), np.uint8)  # transparent: colour under alpha 0 is unused


def _over(fg: np.ndarray, alpha: np.ndarray, bg: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255
    return (fg * a + bg * (1 - a) + 0.5).astype(np.uint8)


class Compositor:
    """Renderer output (the rig square) -> full frames, RGB or RGBA (transparent background).

    Per frame: one copy of the still frame plus the square (RGB), or for a replaced background the
    square's region re-composited with the warped matte. A square rigged upscaled (stage.square) is
    scaled down and only its change from the rest square is added to the still frame: pixels the
    animation leaves alone stay bit-identical, so the paste has no seam.
    """

    def __init__(self, renderer, stage: Stage, seed: int = 0, fps: float = 25.0) -> None:
        # (import cycle: rig imports this module, and body imports it through basis)
        from services.render.body import BodyMotion
        from services.render.rig import CHIN, FACE_OVAL

        self.renderer = renderer
        self.stage = stage
        self.fps = fps
        self._frame = 0
        S = renderer.rig.size
        s = stage.square or S  # the square's side in the frame
        self.shrink = s / S
        self.body = None
        if stage.body is not None:
            lm = renderer.rig.landmarks[:, :2] * self.shrink
            ox, oy = stage.offset
            oval_x = lm[list(FACE_OVAL), 0] + ox
            self.body = BodyMotion.build(stage.body, float(lm[CHIN, 1] + oy),
                                         float(renderer.rig.face_height * self.shrink),
                                         (float(oval_x.min()), float(oval_x.max())), seed=seed)
        W, H = stage.size
        ox, oy = stage.offset
        # The square's part inside the frame, in frame and in square coordinates.
        fx0, fy0, fx1, fy1 = max(ox, 0), max(oy, 0), min(ox + s, W), min(oy + s, H)
        self.frame_box = (fx0, fy0, fx1, fy1)
        self.square_box = (fx0 - ox, fy0 - oy, fx1 - ox, fy1 - oy)
        self.alpha = stage.transparent
        self.scaled = s != S
        if stage.matte is not None:
            self.square_matte = take_square(stage.matte, ox, oy, s)
            self.static_rgba = np.dstack([stage.base, stage.matte]) if self.alpha else None
            if self.scaled:
                self.square_matte = cv2.resize(self.square_matte, (S, S), interpolation=cv2.INTER_LINEAR)
                self.matte_rest = self._down(self.square_matte)
                if not self.alpha:
                    self.plate = cv2.resize(take_square(stage.background, ox, oy, s), (S, S),
                                            interpolation=cv2.INTER_LINEAR)
                    self.rgb_rest = self._down(_over(renderer.rig.image, self.square_matte, self.plate))
        if self.scaled and (stage.matte is None or self.alpha):
            self.rgb_rest = self._down(renderer.rig.image)
        self._matte_buf = None

    @property
    def size(self) -> tuple[int, int]:
        return self.stage.size

    def _down(self, square: np.ndarray) -> np.ndarray:
        """The upscaled rig's square at its size in the frame (area average), its part in the frame."""
        s = self.stage.square
        sx0, sy0, sx1, sy1 = self.square_box
        return cv2.resize(square, (s, s), interpolation=cv2.INTER_AREA)[sy0:sy1, sx0:sx1].astype(np.int16)

    def _pasted(self, still: np.ndarray, square: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """The still frame's pixels plus the scaled-down change of `square` from its rest."""
        return np.clip(still.astype(np.int16) + self._down(square) - rest, 0, 255).astype(np.uint8)

    def render(self, weights: np.ndarray, head_pose: np.ndarray) -> np.ndarray:
        square = self.renderer.render(weights, head_pose)
        fx0, fy0, fx1, fy1 = self.frame_box
        sx0, sy0, sx1, sy1 = self.square_box
        st = self.stage
        t = self._frame / self.fps
        self._frame += 1
        if st.matte is None:
            out = st.base.copy()
            out[fy0:fy1, fx0:fx1] = (self._pasted(out[fy0:fy1, fx0:fx1], square, self.rgb_rest) if self.scaled
                                     else square[sy0:sy1, sx0:sx1])
            return self._breathe(out, t, head_pose)
        matte = self.renderer.warp_like_last(self.square_matte)
        if self.alpha:
            out = self.static_rgba.copy()
            if self.scaled:
                out[fy0:fy1, fx0:fx1, :3] = self._pasted(out[fy0:fy1, fx0:fx1, :3], square, self.rgb_rest)
                out[fy0:fy1, fx0:fx1, 3] = self._pasted(out[fy0:fy1, fx0:fx1, 3], matte, self.matte_rest)
            else:
                out[fy0:fy1, fx0:fx1, :3] = square[sy0:sy1, sx0:sx1]
                out[fy0:fy1, fx0:fx1, 3] = matte[sy0:sy1, sx0:sx1]
            return self._breathe(out, t, head_pose)
        out = st.base.copy()
        if self.scaled:
            out[fy0:fy1, fx0:fx1] = self._pasted(out[fy0:fy1, fx0:fx1], _over(square, matte, self.plate),
                                                 self.rgb_rest)
        else:
            out[fy0:fy1, fx0:fx1] = _over(square[sy0:sy1, sx0:sx1], matte[sy0:sy1, sx0:sx1],
                                          st.background[fy0:fy1, fx0:fx1])
        return self._breathe(out, t, head_pose)

    def _breathe(self, out: np.ndarray, t: float, head_pose: np.ndarray) -> np.ndarray:
        if self.body is not None:
            self.body.apply(out, t, np.asarray(head_pose, np.float64).reshape(-1))
        return out

    def render_track(self, track):
        self.fps = float(track.fps)
        for i in range(len(track)):
            yield self.render(track.weights[i], track.head_pose[i])
