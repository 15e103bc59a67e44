"""Renderer: one photo + ARKit-52 expression frames -> video frames -> H.264/AAC mp4.

    rig = build_rig(load_photo(path_or_bytes))        # once per photo (~50 ms; cacheable bytes)
    renderer = Renderer(rig)                           # once per worker (~10 ms)
    frames = renderer.render_track(track)              # ~5 ms per 512x512 frame
    encode_mp4(frames, audio, sample_rate, track.fps, "out.mp4")
"""
from services.render.encode import decode_mp4, encode_mp4
from services.render.photo import load_photo
from services.render.renderer import Renderer
from services.render.rig import FaceRig, build_rig

__all__ = ["FaceRig", "Renderer", "build_rig", "decode_mp4", "encode_mp4", "load_photo"]
