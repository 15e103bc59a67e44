"""The procedural expression model as named tensors, for Triton (model_repository/expression_procedural)
and the in-process client alike. `to_tensors` / `track_from_tensors` are the caller's side."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from services.common.domain.expression_track import ExpressionTrack
from services.common.domain.speech import Phone, Speech, Word
from services.expression.procedural import animate

MODEL_NAME = "expression_procedural"


def to_tensors(speech: Speech, *, fps: float, seed: int, emotion: str, expressiveness: str) -> dict[str, np.ndarray]:
    def text(values: list[str]) -> np.ndarray:
        return np.array([v.encode("utf-8") for v in values], dtype=np.object_)

    return {
        "audio": np.asarray(speech.audio, np.float32),
        "sample_rate": np.array([speech.sample_rate], np.int32),
        "phone_symbols": text([p.symbol for p in speech.phones]),
        "phone_times": np.array([(p.start, p.end) for p in speech.phones], np.float64).reshape(-1, 2),
        "phone_info": np.array([(p.stress, p.word_index) for p in speech.phones], np.int32).reshape(-1, 2),
        "word_texts": text([w.text for w in speech.words]),
        "word_times": np.array([(w.start, w.end) for w in speech.words], np.float64).reshape(-1, 2),
        "script": text([speech.text]),
        "fps": np.array([fps], np.float32),
        "seed": np.array([seed], np.int64),
        "style": text([emotion, expressiveness]),
    }


def track_from_tensors(outputs: Mapping[str, np.ndarray], fps: float) -> ExpressionTrack:
    return ExpressionTrack(fps=fps, weights=outputs["weights"], head_pose=outputs["head_pose"])


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(array).reshape(-1)]


class ProceduralTensorModel:
    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        times, info = np.asarray(inputs["phone_times"]).reshape(-1, 2), np.asarray(inputs["phone_info"]).reshape(-1, 2)
        word_times = np.asarray(inputs["word_times"]).reshape(-1, 2)
        speech = Speech(
            audio=np.asarray(inputs["audio"], np.float32).reshape(-1),
            sample_rate=int(np.asarray(inputs["sample_rate"]).reshape(-1)[0]),
            phones=[Phone(s, float(t[0]), float(t[1]), int(i[0]), int(i[1]))
                    for s, t, i in zip(_strings(inputs["phone_symbols"]), times, info)],
            words=[Word(w, float(t[0]), float(t[1])) for w, t in zip(_strings(inputs["word_texts"]), word_times)],
            text=(_strings(inputs["script"]) or [""])[0])
        emotion, expressiveness = _strings(inputs["style"])
        track = animate(speech, fps=float(np.asarray(inputs["fps"]).reshape(-1)[0]),
                        seed=int(np.asarray(inputs["seed"]).reshape(-1)[0]),
                        emotion=emotion, expressiveness=expressiveness)
        return {"weights": track.weights, "head_pose": track.head_pose}
