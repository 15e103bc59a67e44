"""Phones -> visemes, and coarticulated mouth curves (JALI-style jaw + lips, Cohen-Massaro blending).

Each viseme is a jaw opening plus a lip shape, each with its own dominance (how strongly the phone
insists on it): lips of /k/ or /h/ barely matter, so they take the shape of the neighbouring vowel
("coo" is rounded from the /k/ on), while /p b m/, /f v/, /w/ and the sibilants dominate. Curves
are the dominance-weighted mean of targets (Cohen & Massaro 1993) with a hold core per phone, then
bilabial closure is enforced as a hard constraint so /p b m/ always show closed lips.

Table (IPA as espeak-ng writes it; diphthongs and r-coloured vowels are split into their parts,
e.g. aɪ = a→ɪ, oʊ = o→ʊ, ɪɹ = ɪ→ɹ, aɪɚ = a→ɪ→ɚ; length marks, stress marks, ties and other
diacritics are ignored):

    viseme   phones                      jaw   lips
    rest     sil _ sp pau (gaps)         0.00  relaxed, closed
    PBM      p b m                       0.02  closed: mouthClose + mouthPress (hard constraint)
    FV       f v                         0.10  lower lip to upper teeth: mouthRollLower, some mouthUpperUp
    TH       θ ð                         0.12  slightly parted, lower lip down
    TDN      t d n ɾ                     0.12  follow neighbours (low lip dominance)
    SZ       s z                         0.05  teeth together, spread: mouthStretch, lips parted
    SH       ʃ ʒ tʃ dʒ                   0.08  protruded: mouthFunnel + mouthPucker
    L        l ɫ                         0.18  follow neighbours
    R        ɹ r ɻ                       0.12  slight funnel/pucker
    W        w ʍ                         0.08  strong pucker + funnel
    J        j                           0.10  spread
    KG       k ɡ g ŋ x                   0.15  follow neighbours
    H        h ɦ ʔ                       0.22  follow neighbours (jaw too)
    i        i iː                        0.12  spread + slight smile
    ɪ        ɪ ᵻ ɨ                       0.18  spread
    e        e eː                        0.30  spread
    ɛ        ɛ ɛː                        0.38  spread, lower lip down
    æ        æ                           0.55  spread, lips apart
    a        a aː ɑ ɑː ɐ(0.40)           0.62  open
    ɒ        ɒ                           0.58  open, slightly rounded
    ʌ        ʌ                           0.45  open
    ə        ə (and any unknown symbol)  0.28  neutral
    ɜ        ɜ ɜː ɝ ɚ                    0.30  slight funnel (r-colour)
    ɔ        ɔ ɔː                        0.45  rounded open: funnel
    o        o oː                        0.32  rounded: funnel + pucker
    ʊ        ʊ                           0.20  rounded
    u        u uː                        0.12  strongly rounded: pucker
    y/ø/œ    y ʏ ø œ                     0.12-0.35 front rounded (other languages)

Unknown symbols: the whole symbol, then its parts left to right (longest match), then its first
character (with diacritics stripped), then the neutral schwa shape. Nothing raises.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

# Lip parameters (JALI's "lip" component); L/R ARKit pairs share one value, the face is symmetric.
LIP_PARAMS: tuple[str, ...] = ("funnel", "pucker", "stretch", "smile", "rollLower", "rollUpper",
                               "upperUp", "lowerDown", "press", "close")
PARAM_CHANNELS: dict[str, tuple[str, ...]] = {
    "funnel": ("mouthFunnel",),
    "pucker": ("mouthPucker",),
    "stretch": ("mouthStretchLeft", "mouthStretchRight"),
    "smile": ("mouthSmileLeft", "mouthSmileRight"),
    "rollLower": ("mouthRollLower",),
    "rollUpper": ("mouthRollUpper",),
    "upperUp": ("mouthUpperUpLeft", "mouthUpperUpRight"),
    "lowerDown": ("mouthLowerDownLeft", "mouthLowerDownRight"),
    "press": ("mouthPressLeft", "mouthPressRight"),
    "close": ("mouthClose",),
}
LIP_CHANNELS: tuple[str, ...] = tuple(c for p in LIP_PARAMS for c in PARAM_CHANNELS[p])
MOUTH_CHANNELS: tuple[str, ...] = ("jawOpen", *LIP_CHANNELS)
SILENCE_SYMBOLS = frozenset({"sil", "sp", "spn", "pau", "_", "#", "", " ", "|", "||", ",", ".", "!", "?"})

BILABIAL_JAW = 0.02  # jawOpen while the lips are held together
_DOMINANCE_SHAPE = 1.5  # c in exp(-(tau/T)^c): between Cohen-Massaro's 1 and a Gaussian's 2


@dataclass(frozen=True)
class Viseme:
    name: str
    jaw: float  # jawOpen target
    lips: tuple[float, ...]  # targets in LIP_PARAMS order
    jaw_dominance: float
    lip_dominance: float
    anticipation_s: float  # dominance time constant before the phone's core
    carryover_s: float  # ... and after it
    vowel: bool = False
    bilabial: bool = False
    silence: bool = False


def _v(name: str, jaw: float, jaw_dom: float, lip_dom: float, ant: float = 0.06, car: float = 0.05,
       *, vowel: bool = False, bilabial: bool = False, silence: bool = False, **lips: float) -> Viseme:
    unknown = set(lips) - set(LIP_PARAMS)
    assert not unknown, unknown
    return Viseme(name, jaw, tuple(float(lips.get(p, 0.0)) for p in LIP_PARAMS), jaw_dom, lip_dom,
                  ant, car, vowel, bilabial, silence)


# Dominances: vowels 1; consonants that constrain the articulator > 1, ones that don't << 1.
# Time constants: rounded vowels anticipate longer (anticipatory lip rounding spans consonants).
VISEMES: dict[str, Viseme] = {v.name: v for v in (
    _v("rest", 0.0, 1.2, 1.2, 0.05, 0.05, silence=True),
    _v("PBM", BILABIAL_JAW, 1.5, 3.0, 0.04, 0.03, bilabial=True, press=0.6, close=0.7,
       rollLower=0.12, rollUpper=0.1),
    _v("FV", 0.10, 2.0, 4.0, 0.05, 0.04, rollLower=0.6, upperUp=0.18, close=0.1),
    _v("TH", 0.12, 1.2, 0.6, lowerDown=0.18, upperUp=0.08, stretch=0.08),
    _v("TDN", 0.12, 0.9, 0.25, lowerDown=0.08),
    _v("SZ", 0.05, 2.5, 1.2, stretch=0.28, upperUp=0.16, lowerDown=0.22),
    _v("SH", 0.08, 2.0, 2.0, funnel=0.45, pucker=0.25, upperUp=0.15, lowerDown=0.15),
    _v("L", 0.18, 0.7, 0.25, lowerDown=0.1),
    _v("R", 0.12, 0.8, 0.9, funnel=0.25, pucker=0.22),
    _v("W", 0.08, 1.2, 3.0, 0.08, 0.05, pucker=0.75, funnel=0.3),
    _v("J", 0.10, 0.9, 0.6, stretch=0.25, smile=0.1),
    _v("KG", 0.15, 0.5, 0.15),
    _v("H", 0.22, 0.15, 0.1),
    _v("i", 0.12, 1.0, 1.0, vowel=True, stretch=0.35, smile=0.15, lowerDown=0.05, upperUp=0.05),
    _v("ɪ", 0.18, 1.0, 0.9, vowel=True, stretch=0.25, smile=0.08, lowerDown=0.08),
    _v("e", 0.30, 1.0, 0.9, vowel=True, stretch=0.25, smile=0.05, lowerDown=0.15),
    _v("ɛ", 0.38, 1.0, 0.9, vowel=True, stretch=0.2, lowerDown=0.2),
    _v("æ", 0.55, 1.0, 0.9, vowel=True, stretch=0.3, lowerDown=0.35, upperUp=0.15),
    _v("a", 0.62, 1.0, 0.9, vowel=True, lowerDown=0.3, stretch=0.1),
    _v("ɐ", 0.40, 1.0, 0.8, vowel=True, lowerDown=0.2),
    _v("ɒ", 0.58, 1.0, 0.9, vowel=True, funnel=0.25, lowerDown=0.2),
    _v("ʌ", 0.45, 1.0, 0.8, vowel=True, lowerDown=0.2),
    _v("ə", 0.28, 0.8, 0.6, vowel=True, lowerDown=0.1),
    _v("ɜ", 0.30, 1.0, 0.9, vowel=True, funnel=0.3, pucker=0.1),
    _v("ɔ", 0.45, 1.0, 1.2, 0.10, 0.06, vowel=True, funnel=0.45, pucker=0.25),
    _v("o", 0.32, 1.0, 1.3, 0.10, 0.06, vowel=True, funnel=0.45, pucker=0.4),
    _v("ʊ", 0.20, 1.0, 1.2, 0.10, 0.06, vowel=True, pucker=0.45, funnel=0.3),
    _v("u", 0.12, 1.0, 1.5, 0.12, 0.06, vowel=True, pucker=0.75, funnel=0.35),
    _v("y", 0.12, 1.0, 1.4, 0.12, 0.06, vowel=True, pucker=0.6, funnel=0.2),
    _v("ø", 0.25, 1.0, 1.3, 0.10, 0.06, vowel=True, pucker=0.5, funnel=0.3),
    _v("œ", 0.35, 1.0, 1.2, 0.10, 0.06, vowel=True, pucker=0.4, funnel=0.3),
)}
NEUTRAL = VISEMES["ə"]

PHONE_TO_VISEME: dict[str, str] = {
    **{s: "PBM" for s in ("p", "b", "m", "ɱ")},
    **{s: "FV" for s in ("f", "v", "ʋ")},
    **{s: "TH" for s in ("θ", "ð")},
    **{s: "TDN" for s in ("t", "d", "n", "ɾ", "ɗ", "ʈ", "ɖ", "ɳ", "ɲ", "c", "ɟ")},
    **{s: "SZ" for s in ("s", "z", "ts", "dz")},
    **{s: "SH" for s in ("ʃ", "ʒ", "tʃ", "dʒ", "ɕ", "ʑ", "ʂ", "ʐ", "ʧ", "ʤ")},
    **{s: "L" for s in ("l", "ɫ", "ɭ", "ʎ", "l̩")},
    **{s: "R" for s in ("ɹ", "r", "ɻ", "ʁ", "ʀ")},
    **{s: "W" for s in ("w", "ʍ", "ɥ")},
    **{s: "J" for s in ("j",)},
    **{s: "KG" for s in ("k", "ɡ", "g", "ŋ", "x", "ɣ", "q", "ɢ", "ɴ")},
    **{s: "H" for s in ("h", "ɦ", "ʔ", "ç", "χ", "ħ", "ʕ")},
    **{s: "i" for s in ("i",)},
    **{s: "ɪ" for s in ("ɪ", "ᵻ", "ɨ", "ɯ")},
    **{s: "e" for s in ("e",)},
    **{s: "ɛ" for s in ("ɛ",)},
    **{s: "æ" for s in ("æ",)},
    **{s: "a" for s in ("a", "ɑ", "ɶ")},
    **{s: "ɐ" for s in ("ɐ",)},
    **{s: "ɒ" for s in ("ɒ",)},
    **{s: "ʌ" for s in ("ʌ", "ɤ")},
    **{s: "ə" for s in ("ə", "ɘ", "ɵ")},
    **{s: "ɜ" for s in ("ɜ", "ɝ", "ɚ", "ɞ")},
    **{s: "ɔ" for s in ("ɔ",)},
    **{s: "o" for s in ("o",)},
    **{s: "ʊ" for s in ("ʊ",)},
    **{s: "u" for s in ("u",)},
    **{s: "y" for s in ("y", "ʏ")},
    **{s: "ø" for s in ("ø",)},
    **{s: "œ" for s in ("œ",)},
}
# Ligatures some engines emit, folded before lookup; marks that carry no mouth shape.
_REWRITES = {"ʧ": "tʃ", "ʤ": "dʒ", "ʦ": "ts", "ʣ": "dz"}
_IGNORED = frozenset({"ˈ", "ˌ", "ː", "ˑ", ":", "'", "\u200d", "\u200c", "\u0361", "\u035c", "‿", "-", "^",
                      "ʰ", "ʲ", "ʷ", "ˠ", "ˤ"})
_KNOWN_CHARS = frozenset("".join(PHONE_TO_VISEME))


def normalize(symbol: str) -> str:
    """Strip stress/length/tie marks and diacritics; keep the base IPA letters (ç stays ç)."""
    out = []
    for ch in "".join(_REWRITES.get(ch, ch) for ch in symbol.strip()):
        if ch in _IGNORED:
            continue
        if ch in _KNOWN_CHARS:
            out.append(ch)
            continue
        out.extend(c for c in unicodedata.normalize("NFD", ch) if not unicodedata.combining(c))
    return "".join(c for c in out if c not in _IGNORED)


@lru_cache(maxsize=4096)
def phone_visemes(symbol: str) -> tuple[Viseme, ...]:
    """The viseme(s) a phone passes through, in order (two or three for diphthongs)."""
    if symbol.strip().lower() in SILENCE_SYMBOLS:
        return (VISEMES["rest"],)
    text = normalize(symbol)
    if not text:
        return (NEUTRAL,)
    if text in PHONE_TO_VISEME:
        return (VISEMES[PHONE_TO_VISEME[text]],)
    parts: list[Viseme] = []
    i = 0
    while i < len(text):  # greedy longest match: "aɪɚ" -> a, ɪ, ɚ; "tʃ" stays one
        for size in (2, 1):
            piece = text[i:i + size]
            if len(piece) == size and piece in PHONE_TO_VISEME:
                parts.append(VISEMES[PHONE_TO_VISEME[piece]])
                i += size
                break
        else:
            i += 1
    if parts:
        merged = [p for k, p in enumerate(parts) if k == 0 or p is not parts[k - 1]]
        return tuple(merged)
    first = text[0].lower()
    return (VISEMES[PHONE_TO_VISEME[first]],) if first in PHONE_TO_VISEME else (NEUTRAL,)


# ------------------------------------------------------------------------------------ curves


@dataclass(frozen=True)
class Target:
    """One viseme held over [start, end] (a phone, or one part of a diphthong)."""

    viseme: Viseme
    start: float
    end: float
    jaw_gain: float = 1.0  # stress/loudness/emotion scaling of the jaw target (vowels)


@dataclass(frozen=True)
class MouthCurves:
    jaw: np.ndarray  # [T] jawOpen
    lips: np.ndarray  # [T, len(LIP_PARAMS)]
    closure: np.ndarray  # [T] 0..1, how much the bilabial constraint is in force

    def to_channels(self) -> dict[str, np.ndarray]:
        out = {"jawOpen": self.jaw}
        for k, p in enumerate(LIP_PARAMS):
            for name in PARAM_CHANNELS[p]:
                out[name] = self.lips[:, k]
        return out


def _core(t: Target) -> tuple[float, float]:
    """Where the phone holds its target fully: middle half of a sound, nearly all of a pause."""
    mid, dur = 0.5 * (t.start + t.end), max(t.end - t.start, 1e-3)
    if t.viseme.silence:
        margin = min(0.03, 0.5 * dur)
        return t.start + margin, t.end - margin
    half = 0.25 * dur if t.viseme.vowel else 0.15 * dur
    return mid - half, mid + half


def _dominance(times: np.ndarray, t: Target, strength: float) -> np.ndarray:
    a, b = _core(t)
    before = np.maximum(a - times, 0.0) / t.viseme.anticipation_s
    after = np.maximum(times - b, 0.0) / t.viseme.carryover_s
    return strength * np.exp(-((before + after) ** _DOMINANCE_SHAPE))


def _closure(times: np.ndarray, fps: float, bilabials: Sequence[Target], approach_s: float = 0.045,
             release_s: float = 0.035) -> np.ndarray:
    """1 over each bilabial (widened to contain the frame nearest its midpoint), smooth ramps around."""
    closure = np.zeros(len(times))
    if not len(times):
        return closure
    for t in bilabials:
        nearest = np.clip(np.round(0.5 * (t.start + t.end) * fps), 0, len(times) - 1) / fps
        a, b = min(t.start, nearest), max(t.end, nearest)
        lo, hi = np.searchsorted(times, [a - approach_s, b + release_s])
        seg = times[lo:hi]
        ramp_in = np.clip(1.0 - (a - seg) / approach_s, 0.0, 1.0)
        ramp_out = np.clip(1.0 - (seg - b) / release_s, 0.0, 1.0)
        x = np.minimum(ramp_in, ramp_out)
        closure[lo:hi] = np.maximum(closure[lo:hi], x * x * (3.0 - 2.0 * x))  # smoothstep
    return closure


def articulate(targets: Sequence[Target], times: np.ndarray, fps: float) -> MouthCurves:
    """Coarticulated jaw + lip curves sampled at `times` (frame times, spacing 1/fps)."""
    n = len(times)
    rest = VISEMES["rest"]
    eps = 1e-6  # a whisper of the rest shape so frames far from every phone stay defined
    jaw_num, jaw_den = np.full(n, eps * rest.jaw), np.full(n, eps)
    lip_num, lip_den = np.tile(np.asarray(rest.lips) * eps, (n, 1)), np.full(n, eps)
    for t in targets:
        v = t.viseme
        reach = 4.0 * max(v.anticipation_s, v.carryover_s)
        lo, hi = np.searchsorted(times, [t.start - reach, t.end + reach])
        if hi <= lo:
            continue
        seg = times[lo:hi]
        dj = _dominance(seg, t, v.jaw_dominance)
        dl = _dominance(seg, t, v.lip_dominance)
        jaw_num[lo:hi] += dj * v.jaw * (t.jaw_gain if v.vowel else 1.0)
        jaw_den[lo:hi] += dj
        lip_num[lo:hi] += dl[:, None] * np.asarray(v.lips)[None, :]
        lip_den[lo:hi] += dl
    jaw = jaw_num / jaw_den
    lips = lip_num / lip_den[:, None]

    # Bilabial closure is a constraint, not a preference: whatever the neighbours, the lips meet.
    closure = _closure(times, fps, [t for t in targets if t.viseme.bilabial])
    pbm = VISEMES["PBM"]
    jaw = jaw * (1.0 - closure) + closure * min(pbm.jaw, BILABIAL_JAW)
    lips = lips * (1.0 - closure[:, None]) + closure[:, None] * np.asarray(pbm.lips)[None, :]
    return MouthCurves(jaw=np.clip(jaw, 0.0, 1.0), lips=np.clip(lips, 0.0, 1.0), closure=closure)
