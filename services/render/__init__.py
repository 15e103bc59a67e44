"""Render stage: one photo + ARKit-52 expression frames -> video frames -> H.264/AAC mp4 (or WebM).

    rig = build_rig(load_photo(path_or_bytes))        # once per photo (cacheable bytes)
    renderer = Renderer(rig)                           # once per worker
    frames = renderer.render_track(track)
    encode_mp4(frames, audio, sample_rate, track.fps, "out.mp4")

The names below are the stage's facade: other packages import them from here (tests/test_layers.py),
each loaded on first use. Timings: docs/notes/render.md.
"""
from services.common.lazy import lazy_exports

_EXPORTS = {
    # photo -> rig
    "load_photo": "photo", "build_rig": "rig", "FaceRig": "rig", "detector": "tensor_model",
    "box_finder": "tensor_model", "segmenter": "tensor_model", "parse_keypoints": "keypoints",
    # frames and framing
    "Renderer": "renderer", "Compositor": "layout", "Background": "layout", "FrameSpec": "layout",
    "ASPECTS": "layout", "FITS": "layout", "CaptionOverlay": "caption_overlay", "FramePump": "pump",
    "PosterPicker": "poster",
    "POSTER_SUFFIXES": "poster", "poster_suffix": "poster", "write_poster": "poster",
    # the API's VideoSpec and its rules
    "check_fps": "spec", "check_framing": "spec", "frame_from_pb": "spec", "frame_to_pb": "spec",
    "parse_frame_pb": "spec",
    # video files and streams
    "encode_mp4": "encode", "decode_mp4": "encode", "stream_mp4": "encode", "AudioFeed": "encode",
    "write_atomically": "encode", "write_video": "formats", "check_output": "formats", "check_writable": "formats", "output_kind": "formats",
    "decode_frames": "formats", "read_mark": "provenance", "detect_watermark": "watermark.detect",
    "WATERMARK_DETECTED_Z": "watermark.DETECTED_Z",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
