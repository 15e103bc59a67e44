"""The video's poster: one still for thumbnails and players (`<video poster=...>`), picked while frames
stream by, so nothing has to decode the video again.

It is the first frame with the eyes open (a blink makes a poor thumbnail), before burned-in captions
are drawn; a JPEG, or a PNG keeping the alpha channel of a transparent video.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from services.common.domain.arkit import INDEX
from services.render import provenance, watermark

EYES_OPEN_BELOW = 0.2  # eyeBlink weight above which a frame is passed over
_BLINKS = [INDEX["eyeBlinkLeft"], INDEX["eyeBlinkRight"]]
JPEG_QUALITY = 90
POSTER_SUFFIXES = (".jpg", ".jpeg", ".png")


class PosterPicker:
    def __init__(self) -> None:
        self.image: np.ndarray | None = None
        self._eyes_open = False

    def offer(self, weights: np.ndarray, image: np.ndarray) -> None:
        """Called with each frame in order (`weights`: its ARKit-52 weights)."""
        if self._eyes_open:
            return
        open_now = float(np.max(np.asarray(weights)[_BLINKS])) < EYES_OPEN_BELOW
        if self.image is None or open_now:
            self.image = image.copy()
            self._eyes_open = open_now


def poster_suffix(alpha: bool) -> str:
    return ".png" if alpha else ".jpg"


def encode_poster(image: np.ndarray, png: bool = False) -> tuple[bytes, str]:
    """(bytes, content type): PNG when asked or when the frame has alpha (RGBA), else JPEG."""
    image = watermark.embed(image)
    if png or image.shape[2] == 4:
        code = cv2.COLOR_RGBA2BGRA if image.shape[2] == 4 else cv2.COLOR_RGB2BGR
        _, data = cv2.imencode(".png", cv2.cvtColor(image, code))
        return provenance.mark_image(data.tobytes()), "image/png"
    _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return provenance.mark_image(data.tobytes()), "image/jpeg"


def write_poster(image: np.ndarray, path: str | Path) -> Path:
    """The poster as a file of the kind its suffix names."""
    target = Path(path)
    target.write_bytes(encode_poster(image, png=target.suffix.lower() == ".png")[0])
    return target
