"""An independent instrument for rendered videos: decode the mp4 with PyAV and measure the face
with mediapipe's face mesh on every frame. It shares no code with the renderer, so it checks what
a viewer would see, not what the renderer believes it drew."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

# mediapipe face-mesh indices: inner lips (13 upper, 14 lower), eyelids, face height (10 top, 152 chin)
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
LEFT_EYE_LIDS, RIGHT_EYE_LIDS = (386, 374), (159, 145)
FOREHEAD, CHIN = 10, 152


@dataclass
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8
    fps: float
    audio: np.ndarray  # float32 mono
    sample_rate: int

    @property
    def video_duration(self) -> float:
        return len(self.frames) / self.fps

    @property
    def audio_duration(self) -> float:
        return len(self.audio) / self.sample_rate


def decode(path: str | Path) -> DecodedVideo:
    with av.open(str(path)) as container:
        vstream = container.streams.video[0]
        fps = float(vstream.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        chunks, rate = [], 0
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            data = frame.to_ndarray().astype(np.float32)
            chunks.append(data.mean(axis=0) if data.ndim == 2 else data)
    return DecodedVideo(np.stack(frames), fps, np.concatenate(chunks) if chunks else np.zeros(0, np.float32), rate)


@dataclass
class FaceMeasures:
    found: np.ndarray  # [T] bool
    mouth_aperture: np.ndarray  # [T] inner-lip gap / face height (nan where no face)
    eye_aperture: np.ndarray  # [T] mean lid gap / face height


def measure_faces(frames: np.ndarray) -> FaceMeasures:
    import mediapipe as mp

    found, mouth, eyes = [], [], []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True,
                                         max_num_faces=1) as mesh:
        for frame in frames:
            result = mesh.process(frame)
            if not result.multi_face_landmarks:
                found.append(False)
                mouth.append(np.nan)
                eyes.append(np.nan)
                continue
            h, w = frame.shape[:2]
            pts = np.array([(p.x * w, p.y * h) for p in result.multi_face_landmarks[0].landmark])
            face_height = np.linalg.norm(pts[FOREHEAD] - pts[CHIN])
            found.append(True)
            mouth.append(np.linalg.norm(pts[UPPER_INNER_LIP] - pts[LOWER_INNER_LIP]) / face_height)
            eyes.append(np.mean([np.linalg.norm(pts[a] - pts[b]) for a, b in (LEFT_EYE_LIDS, RIGHT_EYE_LIDS)])
                        / face_height)
    return FaceMeasures(np.array(found), np.array(mouth), np.array(eyes))


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])
