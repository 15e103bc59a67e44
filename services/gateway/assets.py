"""Uploaded assets: admission checks per kind, content-addressed keys (assets/<sha256>)."""
from __future__ import annotations

import io
import re
import warnings

from services.common import config
from services.common.domain.audio_io import decode_audio
from services.common.domain.errors import InputError
from likeness_client.proto.likeness.v1 import gateway_pb2 as gw

# read once, at import (as the gateway always has)
MAX_BYTES = {
    gw.ASSET_KIND_PHOTO: config.get_int("LIKENESS_MAX_PHOTO_BYTES"),
    gw.ASSET_KIND_VOICE_SAMPLE: config.get_int("LIKENESS_MAX_AUDIO_BYTES"),
    gw.ASSET_KIND_DRIVING_AUDIO: config.get_int("LIKENESS_MAX_AUDIO_BYTES"),
    gw.ASSET_KIND_SCRIPT: 256 * 1024,
}
MAX_PHOTO_PIXELS = config.get_int("LIKENESS_MAX_PHOTO_PIXELS")
ASSET_ID = re.compile(r"^[0-9a-f]{64}$")


MAX_KEY_CHARS = 1024  # S3's own limit


def check_key(key: str, field: str) -> str:
    """An object key a request may name: relative, no '..' segment, no NUL or backslash, bounded."""
    if not key:
        raise InputError(field, "is required")
    if len(key) > MAX_KEY_CHARS:
        raise InputError(field, f"at most {MAX_KEY_CHARS} characters")
    if key.startswith("/") or "\0" in key or "\\" in key or ".." in key.split("/"):
        raise InputError(field, "must be a relative object key without '..', NUL or backslashes")
    return key


def asset_key(asset_id: str) -> str:
    if not ASSET_ID.match(asset_id):
        raise InputError("asset_id", "must be the 64-hex-digit id UploadAsset returned")
    return f"assets/{asset_id}"


def owner_key(asset_id: str, principal: str) -> str:
    """An empty object that says this principal uploaded this asset (API keys on); "" lists them all."""
    return f"asset-owners/{asset_id}/{principal}"


def check_header(header: gw.UploadAssetHeader) -> None:
    if header.kind not in MAX_BYTES:
        raise InputError("header.kind", "must be PHOTO, VOICE_SAMPLE, DRIVING_AUDIO or SCRIPT")
    if not ASSET_ID.match(header.sha256.lower()):
        raise InputError("header.sha256", "must be the lowercase hex SHA-256 of the content (64 digits)")
    if header.size_bytes <= 0:
        raise InputError("header.size_bytes", "must be the total size in bytes (> 0)")
    if header.size_bytes > MAX_BYTES[header.kind]:
        raise InputError("header.size_bytes", f"{header.size_bytes} bytes is over the limit of "
                                              f"{MAX_BYTES[header.kind]} for this kind")


def check_content(kind: int, data: bytes) -> None:
    """Cheap admission checks so a job does not fail minutes later on an obviously bad asset."""
    if kind == gw.ASSET_KIND_PHOTO:
        from PIL import Image, UnidentifiedImageError  # (Pillow: photos alone; the gateway starts without it)

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # (our own limit follows)
                with Image.open(io.BytesIO(data)) as image:
                    if image.width * image.height > MAX_PHOTO_PIXELS:
                        raise InputError("photo", f"{image.width}x{image.height} is over {MAX_PHOTO_PIXELS} pixels")
                    image.verify()
        except Image.DecompressionBombError:  # (Pillow's own limit, before it tells the size)
            raise InputError("photo", f"over {MAX_PHOTO_PIXELS} pixels") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            # (Pillow's messages name the buffer's repr: none of the caller's business)
            raise InputError("photo", "not a readable image (JPEG, PNG, WebP, ...)") from None
    elif kind in (gw.ASSET_KIND_VOICE_SAMPLE, gw.ASSET_KIND_DRIVING_AUDIO):
        decode_audio(data, field="audio")
    elif kind == gw.ASSET_KIND_SCRIPT:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("script", "must be UTF-8 text") from None
