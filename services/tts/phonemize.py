"""Text -> espeak-ng IPA, clause by clause, with each clause's IPA mapped back to the script's words.

espeak-ng is GPL, so it runs as a program (`espeak-ng -q --ipa -v LANG`), never linked. It drops
punctuation and merges some function words ("of the" -> ʌvðə), so:
  * the script is split into clauses here, keeping the , . ; : ? ! that ends each one (the voice
    was trained on espeak IPA with that punctuation appended, as Piper does);
  * every word is also phonemized alone, and an edit-distance alignment of the clause IPA against
    the concatenated word IPAs says which word each IPA character belongs to.
All clauses and words go through ONE espeak-ng process: fed on stdin, espeak-ng treats each line
as a separate text; items are separated by blank lines, which come back as blank lines.
"""
from __future__ import annotations

import functools
import re
import subprocess
import unicodedata
from dataclasses import dataclass

import numpy as np

from services.common import config
from services.common.domain.errors import InputError
from services.tts.phones import STRESS_MARKS

DEFAULT_LANGUAGE = "en-us"
CLAUSE_PUNCTUATION = ",.;:?!"
SENTENCE_END = ".?!"
# A clause longer than this is phonemized in pieces (keeps the word alignment and model input small).
MAX_CLAUSE_WORDS = 30
# Symbols espeak-ng reads aloud in a useful way; other symbols (emoji, markup, brackets) are dropped.
SPOKEN_SYMBOLS = frozenset("$%&@+=#/€£¥°")
_QUOTES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'", "“": '"', "”": '"', "„": '"',
                         "«": '"', "»": '"', "…": "...", "–": " - ", "—": " - ", "―": " - "})
_LANGUAGE_SWITCH = re.compile(r"\([a-z\-]+\)")  # espeak marks foreign words as "(fr)...(en)"
_MARKUP = re.compile(r"<[^<>]{0,200}>")  # HTML/SSML tags pasted into a script


def _espeak() -> str:
    return config.get_str("LIKENESS_ESPEAK")


@dataclass(frozen=True)
class Clause:
    """A piece of the script between punctuation marks, phonemized."""

    words: tuple[str, ...]  # the script's words in this clause, as written (edge punctuation stripped)
    first_word: int  # index of words[0] among all the script's words
    punctuation: str  # , . ; : ? ! that ends it, or "" for a piece of an over-long clause
    ipa: str  # espeak-ng IPA (Unicode NFD), IPA words separated by single spaces
    word_labels: tuple[int, ...]  # per character of `ipa`: index into `words`, -1 for spaces

    @property
    def ends_sentence(self) -> bool:
        return self.punctuation != "" and self.punctuation in SENTENCE_END


# -- languages ---------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def supported_languages() -> tuple[str, ...]:
    """Language codes espeak-ng has voices for (`espeak-ng --voices`), aliases included."""
    try:
        out = subprocess.run([_espeak(), "--voices"], capture_output=True, text=True, check=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"espeak-ng is not usable ({exc}); install the espeak-ng package") from exc
    languages: set[str] = set()
    for line in out.splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 2:
            languages.add(cols[1].lower())
            languages.update(m.lower() for m in re.findall(r"\(([\w\-]+) \d+\)", line))
    return tuple(sorted(languages))


def language_code(language: str) -> str:
    """A language tag as espeak-ng names its voices: "en_US" -> "en-us"."""
    return (language or "").strip().lower().replace("_", "-")


def check_language(language: str) -> str:
    """Normalise a language code (language_code) or raise InputError("language", ...)."""
    code = language_code(language)
    supported = supported_languages()
    if code not in supported:
        shown = language[:24] + ("..." if len(language) > 24 else "")  # (never echo unbounded input)
        listed = ", ".join(["en-us", *(c for c in supported if c != "en-us")][:24])  # (the default first)
        raise InputError("language", f"unknown language {shown!r}; supported: {listed}, ... ({len(supported)} "
                                     "in all: the language codes of `espeak-ng --voices`)")
    return code


# The espeak-ng languages that read each non-Latin writing system (Unicode script names; KANA:
# hiragana and katakana, with any kanji among them). Any other language spells such letters out one
# by one ("Japanese letter, Japanese letter..." under en-us), so that script is refused, naming the
# languages that read it (docs/notes/tts.md#scripts-a-language-does-not-read).
READERS: dict[str, tuple[str, ...]] = {
    "CYRILLIC": ("ru", "uk", "bg", "sr", "mk", "be", "kk", "ky", "tt", "ba", "cv", "nog", "hbs"),
    "GREEK": ("el", "grc"), "ARABIC": ("ar", "fa", "ur", "sd", "ug"), "HEBREW": ("he",),
    "DEVANAGARI": ("hi", "ne", "mr", "kok"), "BENGALI": ("bn", "as", "bpy"), "GURMUKHI": ("pa",),
    "GUJARATI": ("gu",), "ORIYA": ("or",), "TAMIL": ("ta",), "TELUGU": ("te",), "KANNADA": ("kn",),
    "MALAYALAM": ("ml",), "SINHALA": ("si",), "THAI": ("th",), "MYANMAR": ("my",), "GEORGIAN": ("ka",),
    "ARMENIAN": ("hy", "hyw"), "ETHIOPIC": ("am",), "HANGUL": ("ko",), "KANA": ("ja",),
    "CJK": ("cmn", "zh", "yue", "hak"),
}
_SCRIPT_NAMES = {"KANA": "Japanese kana", "CJK": "Chinese characters"}  # (others: "Cyrillic letters")


def writing_system(text: str) -> str:
    """The Unicode script most of `text`'s letters are in: "LATIN", "CYRILLIC", "CJK", "KANA", ...
    ("" without letters)."""
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "").split(" ")[0]
            name = {"FULLWIDTH": "LATIN", "HIRAGANA": "KANA", "KATAKANA": "KANA",
                    "KATAKANA-HIRAGANA": "KANA"}.get(name, name)
            counts[name] = counts.get(name, 0) + 1
    if "KANA" in counts:  # kanji among kana: Japanese, not Chinese
        counts["KANA"] += counts.pop("CJK", 0)
    return max(counts, key=counts.get) if counts else ""


def check_readable(text: str, language: str) -> None:
    """InputError("language", ...) when espeak-ng in `language` (a normalised code) would spell the
    script's letters out one by one, or cannot read its Japanese kanji. Needs no espeak-ng."""
    system = writing_system(text)
    readers = READERS.get(system)
    if readers is not None and language not in readers and language.split("-")[0] not in readers:
        written = _SCRIPT_NAMES.get(system, f"{system.title()} letters")
        raise InputError("language", f"the script is written in {written}, which {language} reads out letter "
                                     f"by letter; set the language to one that reads them: {', '.join(readers)}")
    if language.split("-")[0] == "ja" and any(unicodedata.name(ch, "").startswith("CJK") for ch in text):
        raise InputError("language", "espeak-ng reads Japanese in kana only (kanji come out as 'Chinese "
                                     "letter'): write the script in hiragana and katakana")


# -- text -> clauses ---------------------------------------------------------------------------
def clean_text(text: str) -> str:
    """Unify quotes/dashes, drop what espeak-ng can't speak, collapse whitespace."""
    text = _MARKUP.sub(" ", unicodedata.normalize("NFC", text)).translate(_QUOTES)
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch.isspace():
            kept.append(" ")
        elif cat[0] in "LMN" or ch in "'-.,;:?!" or ch in SPOKEN_SYMBOLS:
            kept.append(ch)
        else:  # emoji, markup, brackets, quotes, control characters
            kept.append(" ")
    return " ".join("".join(kept).split())


def _is_word(core: str) -> bool:
    return any(ch.isalnum() or ch in SPOKEN_SYMBOLS for ch in core)


def _clause_mark(run: str) -> str:
    for mark in "?!.;:":
        if mark in run:
            return mark
    return ","


def split_clauses(text: str) -> list[tuple[list[str], str]]:
    """Cleaned text -> [(words, punctuation)]. Over-long clauses become pieces with punctuation ""."""
    clauses: list[tuple[list[str], str]] = []
    words: list[str] = []

    def close(mark: str) -> None:
        nonlocal words
        if words:
            for start in range(0, len(words), MAX_CLAUSE_WORDS):
                piece = words[start:start + MAX_CLAUSE_WORDS]
                last = start + MAX_CLAUSE_WORDS >= len(words)
                clauses.append((piece, mark if last else ""))
            words = []
        elif clauses and mark in SENTENCE_END and clauses[-1][1] not in SENTENCE_END:
            clauses[-1] = (clauses[-1][0], mark)  # "word, ." -> the stronger mark wins

    for token in text.split():
        lead = re.match(r"^['\-.,;:?!]*", token).group(0)
        trail = re.search(r"['\-.,;:?!]*$", token[len(lead):]).group(0)
        core = token[len(lead):len(token) - len(trail)]
        if _is_word(core):
            words.append(core)
        if any(ch in CLAUSE_PUNCTUATION for ch in trail) or (not _is_word(core) and "-" in token):
            close(_clause_mark(trail))
        elif not _is_word(core) and any(ch in CLAUSE_PUNCTUATION for ch in lead):
            close(_clause_mark(lead))
    close(".")  # a script that ends without punctuation ends a sentence anyway
    return clauses


# -- espeak-ng ---------------------------------------------------------------------------------
def espeak_ipa(lines: list[str], language: str = DEFAULT_LANGUAGE) -> list[str]:
    """IPA for each line (espeak-ng treats each as its own text), one espeak-ng process in all."""
    if not lines:
        return []
    groups = _run_espeak("\n\n".join(lines) + "\n", language)
    if len(groups) != len(lines):  # an item came back with a blank line inside: go one by one
        groups = [" ".join(g for g in _run_espeak(line + "\n", language)) for line in lines]
    return [_tidy(g) for g in groups]


def _run_espeak(text: str, language: str) -> list[str]:
    try:
        proc = subprocess.run([_espeak(), "-q", "--ipa", "-b", "1", "-v", language], input=text,
                              capture_output=True, text=True, encoding="utf-8", timeout=120)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(f"espeak-ng failed: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(f"espeak-ng exited {proc.returncode}: {proc.stderr.strip()[:200]}")
    groups: list[str] = []
    current: list[str] = []
    for line in proc.stdout.split("\n"):
        if line.strip():
            current.append(line.strip())
        elif current:
            groups.append(" ".join(current))
            current = []
    if current:
        groups.append(" ".join(current))
    return groups


def _tidy(ipa: str) -> str:
    ipa = _LANGUAGE_SWITCH.sub("", ipa)
    # NFD as Piper does (e.g. ç -> c + combining cedilla): the voice's id map is decomposed.
    return " ".join(unicodedata.normalize("NFD", ipa).split())


# -- words <-> IPA -----------------------------------------------------------------------------
def label_words(clause_ipa: str, word_ipas: list[str]) -> list[int]:
    """Which word each character of `clause_ipa` belongs to (-1 for spaces).

    Aligns the clause IPA with the concatenation of the words phonemized alone (Levenshtein,
    numpy row by row); a character espeak added in context takes its left neighbour's word.
    Labels never decrease, so every word owns one contiguous stretch.
    """
    a_pos = [i for i, ch in enumerate(clause_ipa) if ch != " " and ch not in STRESS_MARKS]
    a = [clause_ipa[i] for i in a_pos]
    b: list[str] = []
    b_label: list[int] = []
    for w, ipa in enumerate(word_ipas):
        for ch in ipa:
            if ch != " " and ch not in STRESS_MARKS:
                b.append(ch)
                b_label.append(w)
    labels = [-1] * len(clause_ipa)
    if not a:
        return labels
    if not b:
        b, b_label = ["?"], [0]
    a_labels = _align_labels(a, b, b_label)
    for pos, lab in zip(a_pos, a_labels):
        labels[pos] = lab
    # Stress marks belong to the phone after them; spaces stay -1.
    for i in range(len(clause_ipa) - 1, -1, -1):
        if clause_ipa[i] in STRESS_MARKS:
            labels[i] = labels[i + 1] if i + 1 < len(clause_ipa) and labels[i + 1] >= 0 else (
                labels[i - 1] if i > 0 else 0)
    return labels


def _align_labels(a: list[str], b: list[str], b_label: list[int]) -> list[int]:
    m, n = len(a), len(b)
    bv = np.array([ord(c) for c in b])
    cost = np.zeros((m + 1, n + 1), dtype=np.int32)
    cost[0] = np.arange(n + 1)
    steps = np.arange(n + 1)
    for i in range(1, m + 1):
        prev = cost[i - 1]
        cand = np.empty(n + 1, dtype=np.int32)
        cand[0] = i
        cand[1:] = np.minimum(prev[:-1] + (bv != ord(a[i - 1])), prev[1:] + 1)
        # Insertions within the row: cost[j] = min_k<=j cand[k] + (j - k).
        cost[i] = np.minimum.accumulate(cand - steps) + steps
    out = [-1] * m
    i, j = m, n
    while i > 0:
        if j > 0 and cost[i, j] == cost[i - 1, j - 1] + (b[j - 1] != a[i - 1]):
            out[i - 1] = b_label[j - 1]
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + 1:
            i -= 1  # a character espeak added in context: labelled below
        else:
            j -= 1
    first = next((lab for lab in out if lab >= 0), 0)
    current = first
    for k in range(m):
        current = max(current, out[k]) if out[k] >= 0 else current
        out[k] = current
    return out


# -- the whole script --------------------------------------------------------------------------
def phonemize(text: str, language: str = DEFAULT_LANGUAGE) -> list[Clause]:
    """Script -> phonemized clauses. Raises InputError for an unknown language, or one that would
    spell the script's letters out (check_readable)."""
    code = check_language(language)
    check_readable(text, code)
    pieces = split_clauses(clean_text(text))
    word_list = sorted({w for words, _ in pieces for w in words})
    ipas = espeak_ipa([" ".join(words) for words, _ in pieces] + word_list, code)
    clause_ipas, word_ipa = ipas[:len(pieces)], dict(zip(word_list, ipas[len(pieces):]))
    clauses: list[Clause] = []
    first = 0
    for (words, mark), ipa in zip(pieces, clause_ipas):
        labels = label_words(ipa, [word_ipa[w] for w in words])
        clauses.append(Clause(tuple(words), first, mark, ipa, tuple(labels)))
        first += len(words)
    return clauses
