"""The built-in voices (services/tts/voices.py), measured: intelligibility, pitch and speed.

Per voice, over the 6 Harvard sentences of benchmarks/voice.py: pocketsphinx WER (its en-us LM,
+ jiwer), median F0 (Harvest and pyin: they disagree on unusual voices, so both are shown) and the
real-time factor of synthesis (seconds per second of speech, after one warm-up sentence).

    python benchmarks/voices.py   (prints a table, writes benchmarks/results/voices.json)
"""
from __future__ import annotations

import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
warnings.filterwarnings("ignore")

from services.common.infra.inference import InProcessClient  # noqa: E402
from services.tts import TextToSpeech  # noqa: E402
from services.tts.tensor_model import ModelVoice  # noqa: E402
from services.tts.voices import VOICES, VoiceBank  # noqa: E402
from voice import SCRIPTS, Recogniser, wer  # noqa: E402


def median_f0(audio: np.ndarray, rate: int) -> tuple[float, float]:
    """(Harvest, pyin) median F0 in Hz over voiced frames."""
    import librosa
    import pyworld

    x = audio.astype(np.float64)
    f0, _ = pyworld.harvest(x, rate, f0_floor=60, f0_ceil=500)
    y = librosa.resample(audio, orig_sr=rate, target_sr=16000)
    p, voiced, _ = librosa.pyin(y, fmin=60, fmax=500, sr=16000)
    return float(np.median(f0[f0 > 0])), float(np.nanmedian(p[voiced]))


def main() -> None:
    client = InProcessClient()
    bank = VoiceBank(TextToSpeech(voice=ModelVoice(client)), client)
    recognise = Recogniser()
    rows = []
    for name, voice in VOICES.items():
        bank.speak(SCRIPTS[0], name)  # warm-up: model load
        hyps, harvest, pyin, seconds, audio_s = [], [], [], 0.0, 0.0
        for i, script in enumerate(SCRIPTS):
            t0 = time.perf_counter()
            speech = bank.speak(script, name, seed=i)
            seconds += time.perf_counter() - t0
            audio_s += speech.duration
            hyps.append(recognise(speech.audio, speech.sample_rate))
            h, p = median_f0(speech.audio, speech.sample_rate)
            harvest.append(h)
            pyin.append(p)
        rows.append({"voice": name, "gender": voice.gender, "engine": voice.engine, "wer": wer(SCRIPTS, hyps),
                     "f0_harvest_hz": float(np.median(harvest)), "f0_pyin_hz": float(np.median(pyin)),
                     "rtf": seconds / audio_s})
        print(f"{name:<14} WER {rows[-1]['wer']:.3f}  F0 {rows[-1]['f0_harvest_hz']:.0f} / "
              f"{rows[-1]['f0_pyin_hz']:.0f} Hz  RTF {rows[-1]['rtf']:.3f}", flush=True)
    print("\n| voice | engine | gender | WER | median F0 (Harvest / pyin) | RTF |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['voice']} | {r['engine']} | {r['gender']} | {r['wer']:.2f} | {r['f0_harvest_hz']:.0f} / "
              f"{r['f0_pyin_hz']:.0f} Hz | {r['rtf']:.3f} |")
    out = ROOT / "benchmarks" / "results" / "voices.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "load_average": os.getloadavg(),
                               "voices": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
