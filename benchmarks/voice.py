"""Voice cloning and own-recording driving, measured.

Cloning, per speaker: a profile from a SAMPLE, then scripts spoken by (a) the untouched TTS voice and
(b) the cloned voice; both compared with HELD-OUT speech of the same speaker (resemblyzer cosine),
next to the genuine same-speaker pair sample vs held-out (the ceiling). Intelligibility: WER of
pocketsphinx (its en-us LM) + jiwer against the script, for the untouched and the cloned voice.
RTF: (TTS + conversion) seconds per second of speech; profile build seconds. Methods side by side
(LIKENESS_BENCH_METHODS, default "world,kokoro"): "world" = Piper + WORLD conversion, "kokoro" =
Kokoro style search (+ WORLD on top when it scores higher on the calibration text). The untouched
voices are Piper (the default TTS; the WER ratio is against it) and Kokoro's shipped jm_kumo style.

Speakers:
  real (held out: never used for any development choice): the LibriVox reader of the pocketsphinx
  5.1.1 sdist (sample 0870+0890+0920, held out 0880+0930) and the "cards" speaker (sample 001-004,
  held out 005);
  dev (what the conversion was tuned on): espeak-ng voices en-us+f3, en-gb+m3, en+f4, en-us+m7.
Alignment: median phone-onset error of our aligner (recording prepared: trimmed, normalised, mp3
round trip) against the reference alignments of the 5 LibriVox utterances.

    python benchmarks/voice.py   (prints tables, writes benchmarks/results/voice.json)
Needs the pocketsphinx sdist: LIKENESS_POCKETSPHINX_SDIST (default ~/.cache/likeness/pocketsphinx-5.1.1;
`pip download --no-deps --no-binary :all: pocketsphinx==5.1.1` and unpack it there).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

from services.common.domain.audio_io import encode_wav  # noqa: E402
from services.common.infra.inference import InProcessClient  # noqa: E402
from services.tts import TextToSpeech  # noqa: E402
from services.tts.cloning import VoiceCloner  # noqa: E402
from services.tts.cloning.encoder import cosine, embed  # noqa: E402
from services.tts.recording import driving_speech, prepare_recording  # noqa: E402
from services.tts.tensor_model import ModelVoice  # noqa: E402
from services.tts.wavio import read_wav  # noqa: E402

SCRIPTS = [  # Harvard sentences, none in the calibration text or the dev samples
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "Help the woman get back to her feet.",
    "The small pup gnawed a hole in the sock.",
    "Kick the ball straight and follow through.",
    "The fish twisted and turned on the bent hook.",
]
DEV_SAMPLE = ("Oak is strong and also gives shade. Cats and dogs each hate the other. The pipe began to "
              "rust while new. Open the crate but don't break the glass. Add the sum to the product of these three.")
DEV_HELD = "Thieves who rob friends deserve jail. The ripe taste of cheese improves with age."
DEV_VOICES = ["en-us+f3", "en-gb+m3", "en+f4", "en-us+m7"]
LIBRIVOX = "sense_and_sensibility_01_austen_64kb-{}"


def sdist() -> Path:
    path = Path(os.environ.get("LIKENESS_POCKETSPHINX_SDIST", Path.home() / ".cache/likeness/pocketsphinx-5.1.1"))
    if not (path / "test" / "data" / "librivox").is_dir():
        sys.exit(f"pocketsphinx sdist not found at {path} (see the module docstring)")
    return path / "test" / "data"


def espeak(voice: str, text: str) -> tuple[np.ndarray, int]:
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    with tempfile.NamedTemporaryFile(suffix=".wav") as f:
        f.write(wav)
        f.flush()
        return read_wav(f.name)


def speakers(data: Path) -> list[dict]:
    def joined(paths: list[Path]) -> tuple[np.ndarray, int]:
        parts = [read_wav(p) for p in paths]
        gap = np.zeros(int(0.3 * parts[0][1]), np.float32)
        return np.concatenate([x for a, _ in parts for x in (a, gap)]), parts[0][1]

    lib = data / "librivox"
    out = [
        {"name": "librivox-reader", "kind": "real",
         "sample": joined([lib / f"{LIBRIVOX.format(u)}.wav" for u in ("0870", "0890", "0920")]),
         "held": joined([lib / f"{LIBRIVOX.format(u)}.wav" for u in ("0880", "0930")])},
        {"name": "cards", "kind": "real",
         "sample": joined([data / "cards" / f"00{i}.wav" for i in range(1, 5)]),
         "held": joined([data / "cards" / "005.wav"])},
    ]
    for voice in DEV_VOICES:
        out.append({"name": f"espeak {voice}", "kind": "dev", "sample": espeak(voice, DEV_SAMPLE),
                    "held": espeak(voice, DEV_HELD)})
    return out


class Recogniser:
    """pocketsphinx with its en-us LM: the intelligibility instrument."""

    def __init__(self) -> None:
        import pocketsphinx as ps

        self.decoder = ps.Decoder(loglevel="FATAL")

    def __call__(self, audio: np.ndarray, rate: int) -> str:
        from scipy.signal import resample_poly

        pcm = resample_poly(audio, 16000, rate) if rate != 16000 else audio
        raw = (np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(raw, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp else ""


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    def norm(s: str) -> str:
        return " ".join("".join(c for c in s.lower() if c.isalnum() or c in " '").split())

    return float(jiwer.wer([norm(r) for r in references], [norm(h) for h in hypotheses]))


def clone_bench(cloner: VoiceCloner, recognise: Recogniser, data: Path, method: str, plain: dict) -> list[dict]:
    """One cloning method (LIKENESS_CLONE_METHOD) over every speaker; `plain` holds the untouched
    voices' embeddings and transcripts (computed once)."""
    os.environ["LIKENESS_CLONE_METHOD"] = method
    client = cloner.client
    rows = []
    for spk in speakers(data):
        if spk["kind"] not in _kinds():
            continue
        sample, rate = spk["sample"]
        held, held_rate = spk["held"]
        e_held = embed(client, held, held_rate)
        t0 = time.perf_counter()
        profile = cloner.build_profile(encode_wav(sample, rate))
        build_s = time.perf_counter() - t0
        sims, hyps, rtf = speak_scripts(cloner, recognise, profile, e_held)
        rows += _style_only(cloner, recognise, spk, profile, e_held, method, build_s, plain)
        row = {**references(client, spk, e_held, plain), "method": method, "cloned": float(np.mean(sims)),
               "wer_cloned": wer(SCRIPTS, hyps), "rtf_clone": rtf, "profile_build_s": build_s,
               "warp": profile.conversion.warp, "strength": profile.conversion.correction_strength,
               "world_on_top": bool(profile.convert), "calibration_similarity": profile.calibration_similarity}
        rows.append(row)
        print(f"{method:<6} {row['speaker']:<18} {row['kind']:<5} ceiling {row['ceiling']:.3f} (WORLD resynthesis "
              f"{row['vocoder_ceiling']:.3f})  tts {row['tts']:.3f}  "
              f"kokoro {row['tts_kokoro']:.3f}  cloned {row['cloned']:.3f}  gap {row['ceiling'] - row['cloned']:.3f}  "
              f"WER tts {row['wer_tts']:.3f} cloned {row['wer_cloned']:.3f}  RTF {row['rtf_clone']:.3f}  "
              f"profile {build_s:.1f}s  world-on-top {row['world_on_top']}", flush=True)
    return rows


def speak_scripts(cloner: VoiceCloner, recognise: Recogniser, profile, e_held: np.ndarray
                  ) -> tuple[list[float], list[str], float]:
    """The scripts in the profile's voice (TTS + cloning, as a job runs it): similarity of each to the
    held-out speech, what pocketsphinx hears, and the RTF."""
    sims, hyps, seconds, audio_s = [], [], 0.0, 0.0
    for i, script in enumerate(SCRIPTS):
        t0 = time.perf_counter()
        spoken = cloner.speak(script, profile, seed=i)
        seconds += time.perf_counter() - t0
        audio_s += spoken.duration
        sims.append(cosine(embed(cloner.client, spoken.audio, spoken.sample_rate), e_held))
        hyps.append(recognise(spoken.audio, spoken.sample_rate))
    return sims, hyps, seconds / audio_s


def references(client, spk: dict, e_held: np.ndarray, plain: dict) -> dict:
    """A speaker's reference numbers (the same for every method; computed once per speaker): the
    same-speaker ceiling, the WORLD-resynthesis ceiling, the untouched voices and their WER."""
    cache = plain.setdefault("references", {})
    if spk["name"] not in cache:
        sample, rate = spk["sample"]
        cache[spk["name"]] = {
            "speaker": spk["name"], "kind": spk["kind"], "sample_s": round(len(sample) / rate, 1),
            "ceiling": cosine(embed(client, sample, rate), e_held),
            "vocoder_ceiling": vocoder_ceiling(client, sample, rate, e_held),
            "tts": float(np.mean([cosine(e, e_held) for e in plain["piper_emb"]])),
            "tts_kokoro": float(np.mean([cosine(e, e_held) for e in plain["kokoro_emb"]])),
            "wer_tts": wer(SCRIPTS, plain["piper_hyp"]), "wer_tts_kokoro": wer(SCRIPTS, plain["kokoro_hyp"])}
    return cache[spk["name"]]


def vocoder_ceiling(client, sample: np.ndarray, rate: int, e_held: np.ndarray) -> float:
    """The sample itself through WORLD analysis + synthesis vs the held-out speech: the most any
    WORLD-vocoded conversion could reach for this speaker (the vocoder's own loss)."""
    import pyworld

    from services.tts.cloning import world

    a = world.analyse(sample, rate, accurate_f0=True)
    y = pyworld.synthesize(a.f0, a.sp, a.ap, rate, a.frame_period_ms).astype(np.float32)
    return cosine(embed(client, y, rate), e_held)


def _style_only(cloner: VoiceCloner, recognise: Recogniser, spk: dict, profile, e_held: np.ndarray, method: str,
                build_s: float, plain: dict) -> list[dict]:
    """For a Kokoro profile with WORLD on top, the same profile without it (the found style alone)."""
    from dataclasses import replace

    if profile.style is None or not profile.convert:
        return []
    bare = replace(profile, convert=False)
    sims, hyps, rtf = speak_scripts(cloner, recognise, bare, e_held)
    row = {**references(cloner.client, spk, e_held, plain), "method": f"{method}-style-only",
           "cloned": float(np.mean(sims)), "wer_cloned": wer(SCRIPTS, hyps), "rtf_clone": rtf,
           "profile_build_s": build_s, "warp": 1.0, "strength": 0.0, "world_on_top": False,
           "calibration_similarity": profile.calibration_similarity}
    print(f"{row['method']:<6} {row['speaker']:<18} {row['kind']:<5} cloned {row['cloned']:.3f}  "
          f"WER cloned {row['wer_cloned']:.3f}  RTF {row['rtf_clone']:.3f}", flush=True)
    return [row]


def _kinds() -> set[str]:
    return set(os.environ.get("LIKENESS_BENCH_KINDS", "real,dev").split(","))


def plain_voices(cloner: VoiceCloner, recognise: Recogniser) -> dict:
    """The untouched voices on the scripts: Piper (the default TTS) and Kokoro's jm_kumo style."""
    from services.tts.kokoro import shipped_styles

    client = cloner.client
    piper = [cloner.tts.synthesize(s, seed=i) for i, s in enumerate(SCRIPTS)]
    kokoro = [cloner.voices.kokoro().synthesize(s, shipped_styles()["jm_kumo"]) for s in SCRIPTS]
    return {"piper_emb": [embed(client, s.audio, s.sample_rate) for s in piper],
            "piper_hyp": [recognise(s.audio, s.sample_rate) for s in piper],
            "kokoro_emb": [embed(client, s.audio, s.sample_rate) for s in kokoro],
            "kokoro_hyp": [recognise(s.audio, s.sample_rate) for s in kokoro]}


def align_bench(data: Path) -> dict:
    """Our aligner on prepared (mp3 round trip, trimmed, normalised) LibriVox recordings vs the reference."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_recording import encode  # the same encoder the tests use

    os.environ["LIKENESS_RECORDING_MIN_S"] = "1"  # 0880 is 2.99 s: the product's 3 s minimum would refuse it
    errors = []
    for u in ("0870", "0880", "0890", "0920", "0930"):
        base = data / "librivox" / LIBRIVOX.format(u)
        audio, rate = read_wav(f"{base}.wav")
        text = Path(f"{base}.txt").read_text().strip()
        reference = [p for w in json.loads(Path(f"{base}.phone.json").read_text())["w"] for p in w["w"]]
        prepared = prepare_recording(encode(audio, rate, "mp3", "libmp3lame"))
        speech = driving_speech(prepared, text)
        ours = [p.start + prepared.trimmed_start_s for p in speech.phones if p.symbol != "sil"]
        for p in reference:
            if p["t"] not in ("SIL", "+SPN+", "+NSN+"):
                errors.append(min(abs(p["b"] - o) for o in ours))
    errors_ms = np.array(errors) * 1000
    return {"phones": int(errors_ms.size), "median_onset_error_ms": float(np.median(errors_ms)),
            "p90_onset_error_ms": float(np.percentile(errors_ms, 90))}


def main() -> None:
    data = sdist()
    client = InProcessClient()
    tts = TextToSpeech(voice=ModelVoice(client))
    cloner = VoiceCloner(tts, client)
    script = " ".join(SCRIPTS)
    tts.synthesize(script, seed=0)
    t0 = time.perf_counter()
    speech = tts.synthesize(script, seed=0)
    tts_rtf = (time.perf_counter() - t0) / speech.duration
    from services.tts.kokoro import shipped_styles

    kokoro_style = shipped_styles()["jm_kumo"]
    cloner.voices.kokoro().synthesize(SCRIPTS[0], kokoro_style)
    t0 = time.perf_counter()
    spoken = cloner.voices.kokoro().synthesize(script, kokoro_style)
    kokoro_rtf = (time.perf_counter() - t0) / spoken.duration
    print(f"TTS alone RTF: Piper {tts_rtf:.3f}, Kokoro {kokoro_rtf:.3f} (load average {os.getloadavg()[0]:.1f})",
          flush=True)
    recognise = Recogniser()
    plain = plain_voices(cloner, recognise)
    rows = []
    for method in os.environ.get("LIKENESS_BENCH_METHODS", "world,kokoro").split(","):
        rows += clone_bench(cloner, recognise, data, method, plain)
    alignment = align_bench(data)
    summary: dict[str, dict] = {}
    for method in sorted({r["method"] for r in rows}):
        for kind in ("real", "dev"):
            sel = [r for r in rows if r["kind"] == kind and r["method"] == method]
            if not sel:
                continue
            s = {k: float(np.mean([r[k] for r in sel])) for k in
                 ("ceiling", "vocoder_ceiling", "tts", "tts_kokoro", "cloned", "wer_tts", "wer_tts_kokoro", "wer_cloned", "rtf_clone",
                  "profile_build_s")}
            s["gap_to_ceiling"] = s["ceiling"] - s["cloned"]
            s["wer_ratio"] = s["wer_cloned"] / max(s["wer_tts"], 1e-9)
            summary[f"{method}/{kind}"] = s
    print(f"\nTTS alone RTF: Piper {tts_rtf:.3f}, Kokoro {kokoro_rtf:.3f}; load average {os.getloadavg()}")
    print("| method / speakers | ceiling | WORLD resynthesis | untouched TTS (Piper / Kokoro) | cloned | gap "
          "| WER TTS (Piper / Kokoro) | WER cloned | ratio to Piper | RTF TTS+clone | profile s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for key, s in summary.items():
        print(f"| {key} | {s['ceiling']:.3f} | {s['vocoder_ceiling']:.3f} | {s['tts']:.3f} / {s['tts_kokoro']:.3f} | {s['cloned']:.3f} | "
              f"{s['gap_to_ceiling']:.3f} | {s['wer_tts']:.3f} / {s['wer_tts_kokoro']:.3f} | {s['wer_cloned']:.3f} | "
              f"{s['wer_ratio']:.2f} | {s['rtf_clone']:.3f} | {s['profile_build_s']:.1f} |")
    print(f"alignment: {alignment['phones']} phones, median onset error {alignment['median_onset_error_ms']:.1f} ms, "
          f"p90 {alignment['p90_onset_error_ms']:.1f} ms")
    out = Path(os.environ.get("LIKENESS_BENCH_OUT", ROOT / "benchmarks" / "results" / "voice.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "tts_rtf": tts_rtf, "kokoro_rtf": kokoro_rtf,
                               "load_average": os.getloadavg(), "speakers": rows,
                               "summary": summary, "alignment": alignment,
                               "targets": {"gap_to_ceiling": 0.06, "wer_ratio": 1.3, "rtf": 0.2,
                                           "median_onset_error_ms": 20}}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
