"""`likeness inspect`: whether a file carries Likeness's AI-generated marks."""
from __future__ import annotations

import argparse
from pathlib import Path

from services.common.domain.errors import InputError


def add_parser(sub) -> None:
    parser = sub.add_parser("inspect", help="show the AI-generated marks every output carries (metadata, "
                                            "invisible mark; exit 1: neither)")
    parser.add_argument("file", help="a video, PNG-sequence folder or poster")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Whether a file (video, PNG-sequence folder, poster) carries Likeness's AI-generated marks: the
    metadata and the invisible one in the pixels. Exit 0 when either is there, 1 when neither."""
    from services.render import WATERMARK_DETECTED_Z, detect_watermark, read_mark

    path = Path(args.file)
    if not path.exists():
        raise InputError("file", f"no such file or directory: {path}")
    try:
        mark = read_mark(path)
        z = detect_watermark(frames_of(path))
    except Exception as exc:  # not a video or image we can open
        raise InputError("file", f"cannot read {path}: {exc}") from None
    found = z >= WATERMARK_DETECTED_Z
    print(f"{path}: metadata: {mark or 'none (stripped, or not made by Likeness)'}")
    print(f"{path}: invisible mark: {'found' if found else 'not found'} (z = {z:.1f}; "
          f"{WATERMARK_DETECTED_Z:g} or more: found)")
    return 0 if mark is not None or found else 1


def frames_of(path: Path):
    """The first frames of a video, PNG-sequence folder or image (RGB), for the watermark check."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        import numpy as np
        from PIL import Image

        return [np.asarray(Image.open(path).convert("RGB"))]
    from services.render import decode_frames

    return decode_frames(path)
