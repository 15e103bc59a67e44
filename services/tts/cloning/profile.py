"""A speaker profile: what one voice sample teaches about a voice, computed once and stored.

Serialised as versioned JSON (a few kB), so it can be an S3 object (store.profile_key),
a cache file, or `profile_data` on the wire. Parsing never trusts the bytes: anything malformed is
an InputError naming the field it came from.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from services.common.domain.errors import InputError
from services.tts.cloning.world import GRID_HZ, Conversion

FORMAT = "likeness.speaker_profile"
VERSION = 2  # 2: optional Kokoro style (+ whether WORLD conversion runs on top); 1 still reads
# How profiles are built (not their format): stored profiles are named with it, so a better method
# rebuilds them instead of reusing old ones. 3: WORLD correction + the EQ fitted through the encoder.
BUILD_REVISION = 3
STYLE_DIM = 256
METHODS = ("world", "kokoro", "auto")  # LIKENESS_CLONE_METHOD values a profile can be built by


@dataclass
class SpeakerProfile:
    conversion: Conversion  # TTS voice -> this speaker
    embedding: np.ndarray  # speaker embedding of the sample (unit, 256-d)
    voiced_seconds: float
    sample_sha256: str = ""
    calibration_similarity: float = 0.0  # converted calibration speech vs the sample
    warnings: list[str] = field(default_factory=list)
    # Kokoro style found for this speaker (256-d); None: the Piper voice + WORLD conversion (version 1)
    style: np.ndarray | None = None
    convert: bool = True  # run the WORLD conversion (on top of the Kokoro voice when `style` is set)
    # The LIKENESS_CLONE_METHOD that built it: a cache holding a profile another method built rebuilds it
    # (profiles written before this field were all built by "world", the default).
    method: str = "world"

    def to_bytes(self) -> bytes:
        c = self.conversion
        body = {"format": FORMAT, "version": VERSION, "sample_sha256": self.sample_sha256,
                "voiced_seconds": round(self.voiced_seconds, 3),
                "calibration_similarity": round(self.calibration_similarity, 4),
                "embedding": [round(float(x), 6) for x in self.embedding],
                "conversion": {"logf0_source": list(c.logf0_source), "logf0_target": list(c.logf0_target),
                               "warp": c.warp, "f0_strength": c.f0_strength,
                               "correction_strength": c.correction_strength,
                               "grid_hz": [float(GRID_HZ[0]), float(GRID_HZ[-1]), len(GRID_HZ)],
                               "correction": np.round(c.correction, 5).tolist()},
                "warnings": self.warnings, "method": self.method}
        if self.style is not None:
            body["kokoro_style"] = [round(float(x), 6) for x in self.style]
            body["convert"] = bool(self.convert)
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, field_name: str = "voice_reference.profile_data") -> "SpeakerProfile":
        try:
            body = json.loads(bytes(data).decode("utf-8"))
            if body.get("format") != FORMAT:
                raise ValueError("not a speaker profile")
            if body.get("version") not in (1, VERSION):
                raise ValueError(f"profile version {body.get('version')} is not supported (expected {VERSION})")
            c = body["conversion"]
            if c["grid_hz"] != [float(GRID_HZ[0]), float(GRID_HZ[-1]), len(GRID_HZ)]:
                raise ValueError("profile was built for another frequency grid; build it again")
            correction = np.asarray(c["correction"], np.float64)
            if correction.shape != (2, len(GRID_HZ)) or not np.all(np.isfinite(correction)):
                raise ValueError("bad envelope correction")
            embedding = np.asarray(body["embedding"], np.float32)
            conversion = Conversion(tuple(float(x) for x in c["logf0_source"]),
                                    tuple(float(x) for x in c["logf0_target"]), float(c["warp"]), correction,
                                    float(c["f0_strength"]), float(c["correction_strength"]))
            if not 0.5 < conversion.warp < 2.0 or len(conversion.logf0_target) != 2:
                raise ValueError("bad conversion parameters")
            method = body.get("method", "world")
            if method not in METHODS:
                raise ValueError(f"unknown cloning method {method!r}")
            style = None
            if body.get("kokoro_style") is not None:
                style = np.asarray(body["kokoro_style"], np.float32)
                if style.shape != (STYLE_DIM,) or not np.all(np.isfinite(style)) or np.abs(style).max() > 50:
                    raise ValueError("bad Kokoro style")
            return cls(conversion=conversion, embedding=embedding, voiced_seconds=float(body["voiced_seconds"]),
                       sample_sha256=str(body.get("sample_sha256", "")),
                       calibration_similarity=float(body.get("calibration_similarity", 0.0)),
                       warnings=[str(w) for w in body.get("warnings", [])], style=style,
                       convert=bool(body.get("convert", True)), method=method)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            raise InputError(field_name, f"is not a valid speaker profile ({exc})") from None
