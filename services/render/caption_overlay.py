"""Captions burned into the frames (videos for feeds that play muted).

Each cue (services.common.domain.captions) is drawn once: DejaVu Sans Bold (the TTF matplotlib ships,
Bitstream Vera licence), white with a dark outline, re-wrapped to 88% of the frame width, centred
above the bottom 7% of the frame; while the cue is on, its sprite is blended into each frame (and
made opaque in the alpha channel of a transparent video, so the text shows when composited).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from services.common.domain.captions import Cue

TEXT_HEIGHT = 0.045  # font size / the frame's shorter side
MAX_WIDTH = 0.88
BOTTOM_MARGIN = 0.07


@lru_cache(maxsize=1)
def _font_path() -> Path:
    import matplotlib  # (~1 s to import, only to find the font it ships: the render server starts without it)

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


@dataclass(frozen=True)
class _Sprite:
    start: float
    end: float
    x: int
    y: int
    rgb: np.ndarray  # [h, w, 3] float32
    alpha: np.ndarray  # [h, w, 1] float32 in [0, 1]


def _wrap(words: list[str], fits) -> list[str]:
    lines: list[str] = []
    for word in words:
        if lines and fits(f"{lines[-1]} {word}"):
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


class CaptionOverlay:
    def __init__(self, cues: Sequence[Cue], frame_size: tuple[int, int]) -> None:
        width, height = frame_size
        size = max(12, int(round(TEXT_HEIGHT * min(width, height))))
        font = ImageFont.truetype(str(_font_path()), size)
        stroke = max(1, size // 8)
        self.frame_size = frame_size
        self.sprites: list[_Sprite] = []
        for cue in cues:
            text = "\n".join(_wrap(cue.text.split(), lambda s: font.getlength(s) <= MAX_WIDTH * width))
            box = ImageDraw.Draw(Image.new("L", (1, 1))).multiline_textbbox(
                (0, 0), text, font=font, stroke_width=stroke, align="center", spacing=size // 4)
            box = [int(np.floor(box[0])), int(np.floor(box[1])), int(np.ceil(box[2])), int(np.ceil(box[3]))]
            w, h = box[2] - box[0] + 2 * stroke, box[3] - box[1] + 2 * stroke
            image = Image.new("RGBA", (w, h), (0, 0, 0, 0))
            ImageDraw.Draw(image).multiline_text(
                (stroke - box[0], stroke - box[1]), text, font=font, fill=(255, 255, 255, 255),
                stroke_width=stroke, stroke_fill=(16, 16, 16, 255), align="center", spacing=size // 4)
            rgba = np.asarray(image, np.float32)
            x = max((width - w) // 2, 0)
            y = max(height - int(BOTTOM_MARGIN * height) - h, 0)
            w, h = min(w, width - x), min(h, height - y)
            self.sprites.append(_Sprite(cue.start, cue.end, x, y, rgba[:h, :w, :3], rgba[:h, :w, 3:] / 255.0))

    def apply(self, frame: np.ndarray, t: float) -> np.ndarray:
        """The frame (RGB or RGBA uint8) with the cue showing at `t` seconds drawn in (in place)."""
        for s in self.sprites:
            if s.start <= t < s.end:
                region = frame[s.y:s.y + s.rgb.shape[0], s.x:s.x + s.rgb.shape[1]]
                rgb = region[..., :3].astype(np.float32)
                region[..., :3] = np.clip(rgb + (s.rgb - rgb) * s.alpha, 0, 255).astype(np.uint8)
                if frame.shape[2] == 4:
                    region[..., 3] = np.maximum(region[..., 3], (s.alpha[..., 0] * 255).astype(np.uint8))
        return frame
