"""The forced aligner as a tensor model (model_repository/aligner), and the call that reaches it.

`AlignerTensorModel` is what Triton's python backend (or the in-process client) runs: a recording
+ its transcript -> the phone/word timeline as tensors (the same layout the expression model takes).
`align_with(client, ...)` is how the tts service and the driving-recording path call it, through
any InferenceClient (Triton when LIKENESS_TRITON_URL is set, in-process otherwise).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from services.common.domain.errors import InputError
from services.common.infra.inference import InferenceClient
from services.common.domain.speech import Phone, Speech, Word
from services.tts.align import align

MODEL_NAME = "aligner"


def _text(values: list[str]) -> np.ndarray:
    return np.array([v.encode("utf-8") for v in values], dtype=np.object_)


def _strings(array: np.ndarray) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(array).reshape(-1)]


class AlignerTensorModel:
    """audio FP32 [N], sample_rate INT32 [1], transcript BYTES [1] -> phone_symbols BYTES [P],
    phone_times FP64 [P, 2], phone_info INT32 [P, 2] (stress, word index), word_texts BYTES [W],
    word_times FP64 [W, 2]. Uses the process's shared pocketsphinx aligner (built once)."""

    def infer(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        audio = np.asarray(inputs["audio"], np.float32).reshape(-1)
        rate = int(np.asarray(inputs["sample_rate"]).reshape(-1)[0])
        transcripts = _strings(inputs["transcript"])
        if len(transcripts) != 1:
            raise InputError("transcript", "needs exactly one transcript")
        if not np.all(np.isfinite(audio)):
            raise InputError("audio", "has non-finite samples")
        speech = align(audio, rate, transcripts[0])
        return {
            "phone_symbols": _text([p.symbol for p in speech.phones]),
            "phone_times": np.array([(p.start, p.end) for p in speech.phones], np.float64).reshape(-1, 2),
            "phone_info": np.array([(p.stress, p.word_index) for p in speech.phones], np.int32).reshape(-1, 2),
            "word_texts": _text([w.text for w in speech.words]),
            "word_times": np.array([(w.start, w.end) for w in speech.words], np.float64).reshape(-1, 2),
        }


def align_with(client: InferenceClient, audio: np.ndarray, sample_rate: int, transcript: str) -> Speech:
    """Align `transcript` to `audio` through the aligner model. Raises InputError like align()."""
    out = client.infer(MODEL_NAME, {"audio": np.asarray(audio, np.float32).reshape(-1),
                                    "sample_rate": np.array([sample_rate], np.int32),
                                    "transcript": _text([transcript])})
    times = np.asarray(out["phone_times"], np.float64).reshape(-1, 2)
    info = np.asarray(out["phone_info"], np.int64).reshape(-1, 2)
    word_times = np.asarray(out["word_times"], np.float64).reshape(-1, 2)
    phones = [Phone(s, float(t[0]), float(t[1]), int(i[0]), int(i[1]))
              for s, t, i in zip(_strings(out["phone_symbols"]), times, info)]
    words = [Word(w, float(t[0]), float(t[1])) for w, t in zip(_strings(out["word_texts"]), word_times)]
    return Speech(audio=np.asarray(audio, np.float32).reshape(-1), sample_rate=int(sample_rate), phones=phones,
                  words=words, text=transcript)
