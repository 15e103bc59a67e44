"""A track of expression frames: ARKit-52 weights + head pose at a fixed frame rate."""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import numpy as np

from services.common.domain.arkit import ARKIT_52, HEAD_POSE


@dataclass
class ExpressionTrack:
    fps: float
    weights: np.ndarray  # [T, 52] float32 in [0, 1], columns in ARKIT_52 order
    head_pose: np.ndarray  # [T, 6] float32: pitch, yaw, roll (rad), tx, ty, tz (face heights)

    def __post_init__(self) -> None:
        self.weights = np.asarray(self.weights, dtype=np.float32)
        self.head_pose = np.asarray(self.head_pose, dtype=np.float32)
        if self.weights.ndim != 2 or self.weights.shape[1] != len(ARKIT_52):
            raise ValueError(f"weights must be [T, 52], got {self.weights.shape}")
        if self.head_pose.shape != (self.weights.shape[0], len(HEAD_POSE)):
            raise ValueError(f"head_pose must be [T, 6], got {self.head_pose.shape}")

    def __len__(self) -> int:
        return int(self.weights.shape[0])

    def channel(self, name: str) -> np.ndarray:
        return self.weights[:, ARKIT_52.index(name)]

    def to_json(self) -> str:
        return json.dumps({
            "fps": self.fps,
            "blendshape_names": list(ARKIT_52),
            "head_pose_names": list(HEAD_POSE),
            "frames": [
                {"time": round(i / self.fps, 4),
                 "weights": [round(float(v), 4) for v in self.weights[i]],
                 "head_pose": [round(float(v), 5) for v in self.head_pose[i]]}
                for i in range(len(self))
            ],
        })

    @classmethod
    def from_json(cls, text: str) -> "ExpressionTrack":
        data = json.loads(text)
        if list(data["blendshape_names"]) != list(ARKIT_52):
            raise ValueError("blendshape_names must be the ARKit-52 list in order")
        frames = data["frames"]
        return cls(fps=float(data["fps"]),
                   weights=np.array([f["weights"] for f in frames], np.float32).reshape(-1, 52),
                   head_pose=np.array([f["head_pose"] for f in frames], np.float32).reshape(-1, 6))

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["time", *ARKIT_52, *HEAD_POSE])
        for i in range(len(self)):
            writer.writerow([f"{i / self.fps:.4f}", *(f"{v:.4f}" for v in self.weights[i]),
                             *(f"{v:.5f}" for v in self.head_pose[i])])
        return out.getvalue()
