"""VideoSpec (proto) <-> FrameSpec (face_at included) + keypoints, with the same checks everywhere (gateway, render)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from services.common.domain.errors import InputError
from likeness_client.proto.likeness.v1 import common_pb2
from services.render.keypoints import validate_keypoints
from services.render.layout import Background, FrameSpec, parse_color

ASPECT_NAMES = {common_pb2.ASPECT_RATIO_UNSPECIFIED: "1:1", common_pb2.ASPECT_RATIO_1_1: "1:1",
                common_pb2.ASPECT_RATIO_9_16: "9:16", common_pb2.ASPECT_RATIO_16_9: "16:9",
                common_pb2.ASPECT_RATIO_4_5: "4:5"}
ASPECT_ENUM = {"1:1": common_pb2.ASPECT_RATIO_1_1, "9:16": common_pb2.ASPECT_RATIO_9_16,
               "16:9": common_pb2.ASPECT_RATIO_16_9, "4:5": common_pb2.ASPECT_RATIO_4_5}
FIT_NAMES = {common_pb2.FIT_UNSPECIFIED: "cover", common_pb2.FIT_COVER: "cover",
             common_pb2.FIT_CONTAIN: "contain"}
FIT_ENUM = {"cover": common_pb2.FIT_COVER, "contain": common_pb2.FIT_CONTAIN}
CONTENT_TYPES = ("video/mp4", "video/webm")


FPS_MIN, FPS_MAX = 10, 60


def check_fps(fps: float, field: str = "fps") -> float:
    """The frame rate, or InputError naming `field` (every caller's rule)."""
    if not FPS_MIN <= fps <= FPS_MAX:
        raise InputError(field, f"must be from {FPS_MIN} to {FPS_MAX}, got {fps:g}")
    return fps


def frame_from_pb(spec: common_pb2.VideoSpec, fetch: Callable[[common_pb2.ObjectRef, str], bytes] | None = None,
                  prefix: str = "video") -> tuple[FrameSpec, np.ndarray | None]:
    """(FrameSpec, keypoints [5, 2] or None), checked. fetch(ref, field) reads a background image;
    without it an image background is checked for a key only (and carried as empty bytes)."""
    frame, keypoints = parse_frame_pb(spec, fetch, prefix)
    check_framing(frame, keypoints, prefix)
    return frame, keypoints


def parse_frame_pb(spec: common_pb2.VideoSpec, fetch: Callable[[common_pb2.ObjectRef, str], bytes] | None = None,
                   prefix: str = "video") -> tuple[FrameSpec, np.ndarray | None]:
    """(FrameSpec, keypoints or None) as the message says them, not yet checked (check_framing):
    InputError only for what has no FrameSpec form (an unknown enum, a free frame size, a colour)."""
    which = spec.WhichOneof("size")
    if which == "frame_size":
        raise InputError(f"{prefix}.frame_size", "use resolution (the shorter side) with aspect_ratio; "
                                                 "free frame sizes are not supported")
    size = spec.resolution if which == "resolution" else 512
    if spec.aspect_ratio not in ASPECT_NAMES:
        raise InputError(f"{prefix}.aspect_ratio", "unknown value")
    if spec.fit not in FIT_NAMES:
        raise InputError(f"{prefix}.fit", "unknown value")
    background = None
    if spec.HasField("background"):
        kind = spec.background.WhichOneof("kind")
        field = f"{prefix}.background.{kind or 'kind'}"
        if kind == "color":
            background = Background(color=parse_color(spec.background.color, field))
        elif kind == "transparent":
            background = Background(transparent=True) if spec.background.transparent else None
        elif kind == "image":
            if not spec.background.image.key:
                raise InputError(field, "an object key is required")
            background = Background(image=fetch(spec.background.image, field) if fetch else b"")
        else:
            raise InputError(f"{prefix}.background", "set color, transparent or image")
    face_at = (float(spec.face_at.x), float(spec.face_at.y)) if spec.HasField("face_at") else None
    frame = FrameSpec(size=size, aspect=ASPECT_NAMES[spec.aspect_ratio], fit=FIT_NAMES[spec.fit],
                      background=background, face_at=face_at)
    keypoints = None
    if spec.HasField("keypoints"):
        keypoints = np.array([(p.x, p.y) for p in spec.keypoints.points], np.float64).reshape(-1, 2)
    return frame, keypoints


def check_framing(frame: FrameSpec, keypoints: np.ndarray | None, prefix: str = "") -> None:
    """The framing rules (every caller's): the frame's, the keypoints', and keypoints xor face_at.
    With `prefix` (a VideoSpec's field), errors name the message's fields (size -> resolution)."""
    def named(name: str) -> str:
        return f"{prefix}.{'resolution' if name == 'size' else name}" if prefix else name

    try:
        frame.validate()
    except InputError as exc:
        raise InputError(named(exc.field), exc.message) from None
    if keypoints is not None:
        validate_keypoints(np.asarray(keypoints, np.float64), field=named("keypoints"))
        if frame.face_at is not None:
            raise InputError(named("face_at"), "give keypoints or a point on the face, not both")


def frame_to_pb(frame: FrameSpec, *, fps: float = 0.0, keypoints=None,
                background_image: common_pb2.ObjectRef | None = None) -> common_pb2.VideoSpec:
    spec = common_pb2.VideoSpec(resolution=frame.size, aspect_ratio=ASPECT_ENUM[frame.aspect],
                                fit=FIT_ENUM[frame.fit], fps=fps)
    bg = frame.background
    if bg is not None:
        if bg.transparent:
            spec.background.transparent = True
        elif bg.color is not None:
            spec.background.color = "#%02x%02x%02x" % bg.color
        elif background_image is not None:
            spec.background.image.CopyFrom(background_image)
    if keypoints is not None:
        for x, y in np.asarray(keypoints, np.float64).reshape(-1, 2):
            spec.keypoints.points.add(x=float(x), y=float(y))
    if frame.face_at is not None:
        spec.face_at.x, spec.face_at.y = map(float, frame.face_at)
    return spec
