"""Every output says it is AI-generated, in a machine-readable way (EU AI Act art. 50(2) asks this of
systems that make synthetic video; IPTC's digital source type names it).

The mark is metadata, written by the encoders themselves: MP4 `comment` + `description` atoms (also in
the init segment of a live stream), WebM tags, a `provenance.json` beside a PNG sequence's frames, a
JPEG comment or PNG tEXt chunk in posters. `read_mark(path)` finds it again (`likeness inspect FILE`).
Metadata is stripped by some re-encoders and uploaders; it declares, it does not prove.
"""
from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
STATEMENT = "AI-generated: synthetic talking video made by Likeness from a photo, not a recording"
MARK = f"{STATEMENT}; digitalSourceType={SOURCE_TYPE}"
PNG_SEQUENCE_FILE = "provenance.json"


def container_metadata() -> dict[str, str]:
    """Tags for PyAV's `container.metadata` (MP4 and WebM)."""
    return {"comment": MARK, "description": STATEMENT}


def png_sequence_manifest() -> bytes:
    return (json.dumps({"statement": STATEMENT, "digitalSourceType": SOURCE_TYPE, "generator": "Likeness"},
                       indent=2) + "\n").encode()


def mark_image(data: bytes) -> bytes:
    """A JPEG with a COM segment, or a PNG with a tEXt 'Description' chunk, carrying MARK."""
    text = MARK.encode("latin-1")
    if data[:2] == b"\xff\xd8":
        at = 2  # after SOI, and after a JFIF APP0 segment, which must come first
        if data[2:4] == b"\xff\xe0":
            at = 4 + struct.unpack(">H", data[4:6])[0]
        return data[:at] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[at:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        end_of_header = 8 + 12 + struct.unpack(">I", data[8:12])[0]  # signature, then the IHDR chunk
        body = b"tEXt" + b"Description\x00" + text
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
        return data[:end_of_header] + chunk + data[end_of_header:]
    raise ValueError("not a JPEG or PNG image")


def read_mark(path: str | Path) -> str | None:
    """The AI-generated statement of a Likeness output (video, PNG-sequence folder or poster), or None."""
    p = Path(path)
    if p.is_dir():
        manifest = p / PNG_SEQUENCE_FILE
        if not manifest.is_file():
            return None
        data = json.loads(manifest.read_text())
        return f"{data['statement']}; digitalSourceType={data['digitalSourceType']}" if data.get("statement") else None
    head = p.read_bytes()[:1 << 16] if p.suffix.lower() in (".jpg", ".jpeg", ".png") else b""
    if head[:2] == b"\xff\xd8" or head[:8] == b"\x89PNG\r\n\x1a\n":
        at = head.find(SOURCE_TYPE.encode())
        if at < 0:
            return None
        start = head.rfind(STATEMENT.encode(), 0, at)
        return head[start:at + len(SOURCE_TYPE)].decode("latin-1") if start >= 0 else None
    import av  # (PyAV, for a video's mark alone: the gateway imports this module, via poster, without it)

    with av.open(str(p)) as container:
        tags = {k.lower(): v for k, v in container.metadata.items()}
    comment = tags.get("comment", "")
    return comment if SOURCE_TYPE in comment else None
