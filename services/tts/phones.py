"""The phone inventory shared by TTS and alignment: espeak-ng IPA phones, grouped, plus ARPAbet maps.

TTS phones come from espeak-ng's IPA characters; aligned phones come from pocketsphinx's ARPAbet.
Both are expressed in one inventory (espeak-ng en-us IPA, see PHONES) so later stages map
phones -> visemes with a single table.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

SILENCE = "sil"
PRIMARY, SECONDARY = "ˈ", "ˌ"
STRESS_MARKS = {PRIMARY: 1, SECONDARY: 2}

# Base characters that form a syllable nucleus (IPA vowels, incl. espeak's ᵻ and r-coloured ɚ ɝ).
VOWEL_CHARS = frozenset("aeiouyæɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵɶʉʊʌʏøœᵻ")
# Multi-character phones. Diphthongs: en-us, plus en-gb's əʊ eə ʊə (not ɪə: en-us writes it for
# two syllables, as in "Maria"). Affricates tʃ dʒ.
DIPHTHONGS = ("eɪ", "aɪ", "aʊ", "oʊ", "ɔɪ", "əʊ", "eə", "ʊə")
AFFRICATES = ("tʃ", "dʒ")
_CLUSTERS = tuple(sorted(DIPHTHONGS + AFFRICATES, key=len, reverse=True))
# Modifier letters that belong to the preceding phone (length, r-colouring, aspiration, ...).
_MODIFIERS = frozenset("ːˑ˞ʰʲʷˤʼ")
_TIE = "\u0361"  # combining double inverted breve: joins the next character into this phone


def is_modifier(ch: str) -> bool:
    return ch in _MODIFIERS or unicodedata.combining(ch) != 0


def is_vowel(symbol: str) -> bool:
    """True for a phone whose first base character is a vowel (diphthongs and long vowels too)."""
    return bool(symbol) and symbol[0] in VOWEL_CHARS


@dataclass(frozen=True)
class PhoneSpan:
    """A grouped phone: its symbol and the positions of the IPA characters that make it up."""

    symbol: str
    positions: tuple[int, ...]


def group_phones(ipa: str, positions: list[int] | None = None) -> list[PhoneSpan]:
    """Group a run of IPA phone characters (no spaces, stress marks or punctuation) into phones.

    `positions` are the indices the characters have in a longer sequence (default 0..n-1),
    so callers can carry per-character data (frames, word labels) over to the phones.
    """
    pos = list(range(len(ipa))) if positions is None else positions
    spans: list[PhoneSpan] = []
    i = 0
    while i < len(ipa):
        ch = ipa[i]
        if is_modifier(ch) and ch != _TIE and spans:
            last = spans[-1]
            spans[-1] = PhoneSpan(last.symbol + ch, last.positions + (pos[i],))
            i += 1
            continue
        width = 1
        for cluster in _CLUSTERS:
            if ipa.startswith(cluster, i):
                width = len(cluster)
                break
        # A tie bar glues the following character into the same phone.
        while i + width < len(ipa) and ipa[i + width] == _TIE and i + width + 1 < len(ipa):
            width += 2
        spans.append(PhoneSpan(ipa[i:i + width], tuple(pos[i:i + width])))
        i += width
    return spans


def syllable_stress(symbols: list[str], marks: list[int]) -> list[int]:
    """Stress per phone of one word.

    `marks[k]` is the stress (0, 1, 2) of a stress mark written right before phone k (espeak puts
    it before the vowel). Consonants between two vowels: the last one is the next syllable's onset,
    the others the previous syllable's coda; word-initial consonants join the first syllable and
    word-final ones the last. Every phone gets its syllable's stress.
    """
    n = len(symbols)
    nuclei = [k for k in range(n) if is_vowel(symbols[k])]
    if not nuclei:
        stress = max(marks, default=0)
        return [stress] * n
    # Syllable boundaries: start index of each syllable.
    starts = [0]
    for a, b in zip(nuclei, nuclei[1:]):
        consonants = b - a - 1
        starts.append(b - 1 if consonants >= 1 else b)
    bounds = starts + [n]
    out = [0] * n
    for s in range(len(starts)):
        lo, hi = bounds[s], bounds[s + 1]
        # A mark anywhere up to and including the nucleus belongs to this syllable.
        stress = max(marks[lo:nuclei[s] + 1], default=0)
        for k in range(lo, hi):
            out[k] = stress
    return out


# --- ARPAbet (pocketsphinx/cmudict) <-> espeak-ng en-us IPA -------------------------------------
# Vowels whose IPA depends on stress: (unstressed, stressed).
_ARPA_VOWELS: dict[str, tuple[str, str]] = {
    "AA": ("ɑː", "ɑː"), "AE": ("æ", "æ"), "AH": ("ə", "ʌ"), "AO": ("ɔː", "ɔː"), "AW": ("aʊ", "aʊ"),
    "AY": ("aɪ", "aɪ"), "EH": ("ɛ", "ɛ"), "ER": ("ɚ", "ɜː"), "EY": ("eɪ", "eɪ"), "IH": ("ɪ", "ɪ"),
    "IY": ("i", "iː"), "OW": ("oʊ", "oʊ"), "OY": ("ɔɪ", "ɔɪ"), "UH": ("ʊ", "ʊ"), "UW": ("uː", "uː"),
}
_ARPA_CONSONANTS: dict[str, str] = {
    "B": "b", "CH": "tʃ", "D": "d", "DH": "ð", "F": "f", "G": "ɡ", "HH": "h", "JH": "dʒ", "K": "k",
    "L": "l", "M": "m", "N": "n", "NG": "ŋ", "P": "p", "R": "ɹ", "S": "s", "SH": "ʃ", "T": "t",
    "TH": "θ", "V": "v", "W": "w", "Y": "j", "Z": "z", "ZH": "ʒ",
}
ARPABET_VOWELS = frozenset(_ARPA_VOWELS)


def arpabet_to_ipa(phone: str, stress: int = 0) -> str:
    """ARPAbet phone (stress digit optional, e.g. "AH0") -> inventory symbol; SIL/fillers -> sil."""
    base = phone.rstrip("012").upper()
    if phone[-1:] in ("0", "1", "2"):
        stress = int(phone[-1])
    if base in _ARPA_VOWELS:
        return _ARPA_VOWELS[base][1 if stress else 0]
    return _ARPA_CONSONANTS.get(base, SILENCE)


# espeak-ng IPA phone -> ARPAbet (for pronunciations of words cmudict lacks). Keys are grouped
# phones; a phone not listed maps by its base character (length/diacritics dropped).
_IPA_TO_ARPA: dict[str, tuple[str, ...]] = {
    **{ipa: (arpa,) for arpa, ipa in _ARPA_CONSONANTS.items()},
    "ɑː": ("AA",), "ɑ": ("AA",), "ɒ": ("AA",), "a": ("AA",), "aː": ("AA",), "æ": ("AE",),
    "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",), "ɔː": ("AO",), "ɔ": ("AO",), "aʊ": ("AW",),
    "aɪ": ("AY",), "ɛ": ("EH",), "e": ("EH",), "ɛː": ("EH",), "ɚ": ("ER",), "ɝ": ("ER",),
    "ɜː": ("ER",), "ɜ": ("ER",), "eɪ": ("EY",), "ɪ": ("IH",), "ᵻ": ("IH",), "ɨ": ("IH",),
    "iː": ("IY",), "i": ("IY",), "oʊ": ("OW",), "o": ("OW",), "oː": ("AO",), "əʊ": ("OW",),
    "ɔɪ": ("OY",), "ʊ": ("UH",), "uː": ("UW",), "u": ("UW",), "ʉ": ("UW",),
    "eə": ("EH", "R"), "ʊə": ("UH", "R"),
    "ɹ": ("R",), "r": ("R",), "ɾ": ("T",), "ʔ": ("T",), "x": ("K",), "ç": ("HH",), "ɬ": ("L",),
    "ɫ": ("L",), "ʍ": ("W",), "y": ("UW",), "ø": ("ER",), "œ": ("ER",), "ɲ": ("N", "Y"),
}


def ipa_to_arpabet(symbol: str, stress: int = 0) -> list[str]:
    """One inventory phone -> ARPAbet phones (vowels carry the stress digit); [] if unmappable."""
    if symbol == SILENCE:
        return []
    arpa = _IPA_TO_ARPA.get(symbol)
    if arpa is None:
        base = "".join(c for c in symbol if not is_modifier(c))
        arpa = _IPA_TO_ARPA.get(base) or _IPA_TO_ARPA.get(base[:1], ())
    return [p + str(stress) if p in ARPABET_VOWELS else p for p in arpa]


def word_to_arpabet(symbols: list[str], stresses: list[int]) -> list[str]:
    """A word's grouped IPA phones (with per-phone stress) -> an ARPAbet pronunciation.

    espeak writes "hurry" as hˈɜːɹi where cmudict has HH ER1 IY: an R right after ER is dropped.
    """
    out: list[str] = []
    for symbol, stress in zip(symbols, stresses):
        for phone in ipa_to_arpabet(symbol, stress):
            if phone == "R" and out and out[-1].startswith("ER"):
                continue
            out.append(phone)
    return out


# The inventory: every symbol espeak-ng en-us produces after grouping (docs/notes/tts.md#the-phone-inventory),
# every symbol arpabet_to_ipa can return, and "sil".
PHONES: frozenset[str] = frozenset({
    SILENCE,
    # consonants
    "b", "d", "f", "h", "j", "k", "l", "m", "n", "p", "s", "t", "v", "w", "z", "ð", "ŋ", "ɡ",
    "ɹ", "ɾ", "ʃ", "ʒ", "ʔ", "θ", "tʃ", "dʒ", "x", "r", "n̩", "l̩", "m̩",
    # vowels (with espeak's length marks and reduced vowels)
    "a", "aɪ", "aʊ", "e", "eɪ", "i", "iː", "o", "oʊ", "u", "uː", "æ", "ɐ", "ɑ", "ɑː", "ɔ", "ɔː",
    "ɔɪ", "ə", "ɚ", "ɛ", "ɜ", "ɜː", "ɪ", "ʊ", "ʌ", "ᵻ", "oː", "aː", "ɛː",
    *(v for pair in _ARPA_VOWELS.values() for v in pair),
    *_ARPA_CONSONANTS.values(),
})
