"""Audio -> per-frame acoustic features at the expression frame rate (numpy only, fast on CPU).

Log-mel at 100 Hz (16 kHz, 25 ms window, 10 ms hop), 4 analysis frames stacked per 25 fps frame,
plus frame energy relative to the loudest part and the pitch (WORLD's DIO F0 estimator at 10 ms:
log-F0 in octaves relative to the recording's median voiced F0, and a voiced flag): intonation is
what tells a question from a statement, and musical pitch what tells singing from speech.
Per-recording normalisation (mean per band, one global scale; pitch relative to the speaker's own
median) removes level, microphone colour and much of the voice timbre: the model is trained on
synthetic voices and must transfer to real ones.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.signal import resample_poly

from services.expression.procedural import frame_count

SAMPLE_RATE = 16000
HOP = 160  # 10 ms
WIN = 400  # 25 ms
N_FFT = 512
N_MELS = 40
FPS = 25.0  # the model's own frame rate; other rates are resampled from it
STACK = 4  # analysis frames per model frame (100 Hz / 25 fps)
PITCH_FLOOR_HZ, PITCH_CEIL_HZ = 60.0, 900.0  # speech and singing (up to about A5)
PER_FRAME = N_MELS + 3  # log-mel, relative energy, relative log-F0, voiced
FEATURE_DIM = STACK * PER_FRAME


def resample(audio: np.ndarray, sample_rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    audio = np.asarray(audio, np.float32).reshape(-1)
    if sample_rate == target:
        return audio
    g = np.gcd(int(sample_rate), target)
    return resample_poly(audio, target // g, int(sample_rate) // g).astype(np.float32)


@lru_cache(maxsize=1)
def _mel_matrix() -> np.ndarray:
    def mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(60.0), mel(7600.0), N_MELS + 2))
    bins = np.fft.rfftfreq(N_FFT, 1.0 / SAMPLE_RATE)
    fb = np.zeros((N_MELS, len(bins)), np.float32)
    for i in range(N_MELS):
        lo, mid, hi = edges[i:i + 3]
        fb[i] = np.clip(np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), 0.0, None)
    return fb


def _mel_frames(padded: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Analysis frames k = 0..count-1 of `padded` (frame k = padded[k * HOP : k * HOP + WIN])."""
    idx = np.arange(WIN)[None, :] + HOP * np.arange(count)[:, None]
    frames = padded[np.minimum(idx, len(padded) - 1)] * np.hanning(WIN).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, N_FFT)) ** 2
    mel = np.log(power @ _mel_matrix().T + 1e-8)
    energy = np.log(power.sum(axis=1) + 1e-8)
    return mel.astype(np.float32), energy.astype(np.float32)


def log_mel(audio16k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log-mel [N, 40], log energy [N]) at 100 Hz, frame j centred at j * 10 ms."""
    x = np.pad(np.asarray(audio16k, np.float32), (WIN // 2, WIN // 2))
    return _mel_frames(x, max(1, 1 + (len(x) - WIN) // HOP))


def _dio(audio16k: np.ndarray) -> np.ndarray:
    import pyworld  # (~1 s to import, on the first pitch track: the expression server starts without it)

    return pyworld.dio(np.ascontiguousarray(audio16k, np.float64), SAMPLE_RATE, f0_floor=PITCH_FLOOR_HZ,
                       f0_ceil=PITCH_CEIL_HZ, frame_period=1000.0 * HOP / SAMPLE_RATE)[0]


def _relative_pitch(f0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    voiced = f0 > 0
    rel = np.zeros(len(f0), np.float32)
    if voiced.any():
        rel[voiced] = np.clip(np.log2(f0[voiced] / np.median(f0[voiced])), -2.0, 2.0)
    return rel, voiced.astype(np.float32)


# Log power below which audio is (digital) silence, well under a voice's peaks and a hiss's
# (docs/notes/expression-diffusion.md#the-energy-floor): the scale of audio that never got louder than this.
ENERGY_FLOOR = -5.0
# A live stream is read as digital silence until a voice is in it (pitch found in VOICED_MIN analysis
# frames): a microphone's hiss before anyone speaks (DIO finds no pitch in it), normalised on nothing
# but itself, read as speech and opened the mouth (docs/notes/expression-diffusion.md#the-voice-gate).
# A whole recording is not gated: its speech sets the scale, and the same hiss moves nothing.
VOICED_MIN = 10
SILENT_LOG = float(np.log(1e-8))  # log-mel and log energy of digital silence (see _mel_frames)


LONG_SILENCE_FRAMES = 100  # analysis frames (1 s) of digital silence that are a rest, not a pause


def _long_silences(energy: np.ndarray) -> np.ndarray:
    """Frames in runs of more than LONG_SILENCE_FRAMES below ENERGY_FLOOR."""
    silent = np.concatenate([[False], energy < ENERGY_FLOOR, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    out = np.zeros(len(energy), bool)
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start > LONG_SILENCE_FRAMES:
            out[start:end] = True
    return out


def _normalise(mel: np.ndarray, energy: np.ndarray, f0: np.ndarray, n_frames: int) -> np.ndarray:
    """Raw analysis frames (log-mel, log energy, F0 Hz) -> [n_frames, FEATURE_DIM], normalised on
    these frames themselves (the whole recording offline, what has arrived so far live)."""
    rel_f0, voiced = _relative_pitch(f0)
    # Long digital silences (a live face resting or listening between replies) are left out of the
    # statistics: they weakened the next sentence's lips (docs/notes/expression-diffusion.md#long-silences).
    # The pauses inside speech (under a second; every held-out clip's and training clip's) stay in, as trained.
    counted = ~_long_silences(energy)
    if not counted.any():
        counted[:] = True
    loud = counted & (energy >= np.percentile(energy[counted], 50))  # normalise on the speech, not the silences
    mel = (mel - mel[loud].mean(axis=0)) / (mel[loud].std() + 1e-3)
    # (the floor acts only on a live stream that has been silent so far: scaled to its own peak,
    # silence read as loud speech and the jaw hung wide open; docs/notes/expression-diffusion.md#the-energy-floor)
    peak = max(float(np.percentile(energy[counted], 98)), ENERGY_FLOOR)
    rel = np.clip((energy - peak) / 10.0, -6.0, 0.5)[:, None]
    per = np.concatenate([mel, rel, 2.0 * rel_f0[:, None], voiced[:, None]], axis=1)  # [N, PER_FRAME]
    centre = np.round(np.arange(n_frames) * (100.0 / FPS)).astype(int)
    idx = np.clip(centre[:, None] + np.arange(-STACK // 2, STACK - STACK // 2)[None, :], 0, len(per) - 1)
    return per[idx].reshape(n_frames, FEATURE_DIM).astype(np.float32)


def frame_features(audio: np.ndarray, sample_rate: int, n_frames: int) -> np.ndarray:
    """[n_frames, FEATURE_DIM] features for model frames at FPS (frame i at time i / FPS)."""
    audio16k = resample(audio, sample_rate)
    mel, energy = log_mel(audio16k)
    f0 = _dio(audio16k)
    return _normalise(mel, energy, np.pad(f0, (0, max(0, len(mel) - len(f0))))[:len(mel)], n_frames)


# DIO on a piece of audio matches DIO on the whole recording this many analysis frames from the piece's ends,
# nearly always: its contour repair (filling and extending voiced runs) can reach further. Pieces are at
# least DIO_PIECE frames long. Both measured: docs/notes/expression-diffusion.md#dio-pieces.
DIO_MARGIN = 20
DIO_PIECE = 150


class FeatureStream:
    """`frame_features` for audio that arrives in pieces (a live stream). Resampling, log-mel and F0
    are computed once per analysis frame as soon as the audio around it has arrived (as on the whole
    recording: resampling and log-mel exactly, pitch nearly always, see DIO_MARGIN); the normalisation
    uses the frames so far, and audio without a voice so far reads as silence (VOICED_MIN). Given all
    the audio of a recording with a voice in it at once, it returns what `frame_features` does."""

    def __init__(self, sample_rate: int) -> None:
        g = int(np.gcd(int(sample_rate), SAMPLE_RATE))
        self.rate, self.up, self.down = int(sample_rate), SAMPLE_RATE // g, int(sample_rate) // g
        self._raw = np.zeros(1 << 16, np.float32)
        self.received = 0  # input samples
        self.ended = False
        self._a16 = np.zeros(1 << 16, np.float32)
        self._n16 = 0  # final 16 kHz samples
        self._mel = np.zeros((0, N_MELS), np.float32)
        self._energy = np.zeros(0, np.float32)
        self._f0 = np.zeros(0, np.float64)

    def push(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        if self.received + len(samples) > len(self._raw):
            self._raw = np.resize(self._raw, max(2 * len(self._raw), self.received + len(samples)))
        self._raw[self.received:self.received + len(samples)] = samples
        self.received += len(samples)

    def end(self) -> None:
        self.ended = True

    @property
    def duration(self) -> float:
        return self.received / self.rate

    def total_frames(self) -> int:
        """Model frames of the whole recording (known once it has ended)."""
        return frame_count(self.duration, FPS)

    def _reach(self) -> int:
        """Input samples the polyphase resampling filter reaches either side (~10 * max(up, down) / up)."""
        return int(np.ceil(10 * max(self.up, self.down) / self.up)) + 2 * self.down

    def _final_counts(self) -> tuple[int, int, int]:
        """(16 kHz samples, log-mel frames, F0 frames) that the audio so far determines for good."""
        if self.ended:
            n16 = int(np.ceil(self.received * self.up / self.down))
            return n16, 1 + n16 // HOP, 1 + n16 // HOP
        n16 = max(0, (self.received - self._reach()) * self.up // self.down)
        n_mel = max(0, (n16 - WIN // 2) // HOP + 1)
        return n16, n_mel, max(0, min(n_mel, n16 // HOP + 1 - DIO_MARGIN))

    def _resample(self) -> None:
        """Extend the final 16 kHz samples: each piece is resampled with the filter's reach as a margin
        and only its middle kept."""
        reach = self._reach()
        limit = self._final_counts()[0]
        if limit <= self._n16:
            return
        s0 = max(0, (self._n16 * self.down // self.up - reach) // self.down * self.down)
        if self.up == self.down == 1:
            y = self._raw[s0:self.received]
        else:
            y = resample_poly(self._raw[s0:self.received], self.up, self.down).astype(np.float32)
        o0 = s0 * self.up // self.down
        if limit > len(self._a16):
            self._a16 = np.resize(self._a16, max(2 * len(self._a16), limit))
        self._a16[self._n16:limit] = y[self._n16 - o0:limit - o0]
        self._n16 = limit

    def _analyse(self) -> int:
        """Extend log-mel/energy/F0 over the analysis frames whose audio has arrived; returns how many
        analysis frames are final."""
        self._resample()
        a16 = self._a16[:self._n16]
        _, n_all, f0_all = self._final_counts()
        done = len(self._energy)
        if n_all > done:
            lo = done * HOP - WIN // 2  # frame k covers a16[k*HOP - WIN/2 : k*HOP + WIN/2]
            seg = a16[max(lo, 0):(n_all - 1) * HOP + WIN // 2]
            seg = np.pad(seg, (max(0, -lo), (n_all - done - 1) * HOP + WIN - max(0, -lo) - len(seg)))
            mel, energy = _mel_frames(seg, n_all - done)
            self._mel = np.concatenate([self._mel, mel])
            self._energy = np.concatenate([self._energy, energy])
        f0_done = len(self._f0)
        if f0_all > f0_done:
            start = max(0, min(f0_done - DIO_MARGIN, f0_all - DIO_PIECE))
            f0 = _dio(a16[start * HOP:])
            f0 = np.pad(f0, (0, max(0, f0_all - start - len(f0))))
            self._f0 = np.concatenate([self._f0, f0[f0_done - start:f0_all - start]])
        return min(len(self._energy), len(self._f0))

    def ready_frames(self) -> int:
        """Model frames whose features are final (every frame once the audio has ended)."""
        if self.ended:
            return self.total_frames()
        n = min(self._final_counts()[1:])  # model frame i uses analysis frames 4i-2 .. 4i+1
        return max(0, (n - 2) // STACK + 1) if n >= 2 else 0

    def features(self, n_frames: int) -> np.ndarray:
        """[n_frames, FEATURE_DIM], normalised on every final analysis frame so far."""
        n = self._analyse()
        mel, energy = self._mel[:n], self._energy[:n]
        if int(np.count_nonzero(self._f0[:n] > 0)) < VOICED_MIN:  # no voice yet: the face rests
            mel, energy = np.full_like(mel, SILENT_LOG), np.full_like(energy, SILENT_LOG)
        return _normalise(mel, energy, self._f0[:n], n_frames)
