"""Load and validate a user photo: any common format -> upright RGB uint8, or InputError("photo", ...)."""
from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from services.common import config
from services.common.domain.errors import InputError

MIN_SIDE = 64


def max_photo_pixels() -> int:
    """Largest accepted photo (width * height), checked from the header before any pixel is decoded."""
    return config.get_int("LIKENESS_MAX_PHOTO_PIXELS")


def load_photo(data: bytes | str | Path) -> np.ndarray:
    """Decode `data` (encoded bytes, or a file path) into an upright RGB uint8 array [H, W, 3]."""
    raw = _read_bytes(data)
    limit = max_photo_pixels()
    try:
        with warnings.catch_warnings():
            # PIL warns past its own global limit (and raises past 2x it, caught below); ours is
            # checked explicitly. The global is not touched: it is shared by every thread.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(raw))  # lazy: reads the header only
            width, height = img.size
            if width * height > limit:
                raise InputError("photo", f"image is {width}x{height} = {width * height} pixels; "
                                          f"the limit is {limit} (LIKENESS_MAX_PHOTO_PIXELS)")
            if min(width, height) < MIN_SIDE:
                raise InputError("photo", f"image is {width}x{height}; each side must be at least "
                                          f"{MIN_SIDE} pixels")
            img.load()  # full decode: raises on truncated/corrupt data
            img = ImageOps.exif_transpose(img)
            rgb = _to_rgb(img)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError("photo", "not a recognised image (expected JPEG, PNG, WebP, BMP, ...)") from None
    except Image.DecompressionBombError as exc:
        raise InputError("photo", f"image too large: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError("photo", f"corrupt or truncated image: {exc}") from None
    return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def _read_bytes(data: bytes | str | Path) -> bytes:
    if isinstance(data, (bytes, bytearray, memoryview)):
        raw = bytes(data)
    else:
        try:
            raw = Path(data).read_bytes()
        except OSError as exc:
            raise InputError("photo", f"cannot read {data}: {exc.strerror or exc}") from None
    if not raw:
        raise InputError("photo", "empty file")
    return raw


def _to_rgb(img: Image.Image) -> Image.Image:
    """Flatten alpha onto white (transparent cut-outs are common portraits) and normalise the mode."""
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale to 8 bits instead of clipping everything to white.
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)).convert("RGB")
    return img.convert("RGB")  # RGB, L, 1, CMYK, YCbCr, LAB, HSV
