"""Emotion "auto": each sentence of a script gets the emotion its words carry, so a script needs no tags
to look glad where it says good news and sorry where it says bad.

    "We won the cup! Sadly, our captain was hurt. What?! She is playing next week."
      -> happy 0.95, sad 0.6, surprised 0.8, neutral

The words are scored by VADER (vaderSentiment, MIT: a lexicon of ~7,500 rated words with rules for
negation, boosters, capitals and "!"; it ships in its wheel, nothing is downloaded). A clearly positive
sentence is happy, a clearly negative one sad, or angry when it is exclaimed or names anger; "?!",
"wow" and the like are surprised; anything else neutral. The writer's own emotion tags win: a
sentence that holds one gets no automatic tag.
"""
from __future__ import annotations

import re
from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from services.common.domain.captions import _ends_sentence
from services.common.script.pauses import strip_pauses
from services.common.script.tags import EmotionTag, ScriptTag

AUTO = "auto"
THRESHOLD = 0.35  # |VADER compound| below this is neutral ("Thank you all for coming." is 0.36)
_SURPRISE = re.compile(r"\?!|!\?|\b(?:wow|whoa|woah|omg|oh my|gosh|unbelievable)\b", re.IGNORECASE)
_ANGER = re.compile(r"\b(?:hate|hated|angry|furious|outrage\w*|unacceptable|ridiculous|disgust\w*|sick of|fed up|"
                    r"how dare|enough is enough)\b", re.IGNORECASE)


@lru_cache(maxsize=1)
def _analyzer():
    return SentimentIntensityAnalyzer()


def sentence_emotion(sentence: str) -> tuple[str, float]:
    """(emotion, strength) that a sentence's words carry."""
    words = strip_pauses(sentence)
    if not words:
        return "neutral", 1.0
    score = _analyzer().polarity_scores(words)["compound"]
    if _SURPRISE.search(words):
        return "surprised", 0.8
    if score >= THRESHOLD:
        return "happy", round(min(max((score - 0.15) / 0.6, 0.3), 1.0), 2)
    if score <= -THRESHOLD:
        angry = bool(_ANGER.search(words)) or words.rstrip("\"')] ").endswith("!")
        return ("angry" if angry else "sad"), round(min(max((-score - 0.15) / 0.6, 0.3), 1.0), 2)
    return "neutral", 1.0


def sentences(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences in `text` (whitespace around them left out), cut
    where captions cut them ("Dr. Smith" and "3 p.m. today" go on)."""
    spans, start = [], None
    tokens = list(re.finditer(r"\S+", text))
    for k, token in enumerate(tokens):
        start = token.start() if start is None else start
        following = tokens[k + 1].group() if k + 1 < len(tokens) else ""
        if not following or _ends_sentence(token.group(), following):
            spans.append((start, token.end()))
            start = None
    return spans


def with_auto_emotions(text: str, tags: list[ScriptTag], *, tag_first: bool = False) -> list[ScriptTag]:
    """`tags` (strip_tags' for `text`) plus an emotion tag at the start of each sentence that has none
    of the writer's; a tag is added only where the emotion changes (or its strength, by more than 0.25;
    from neutral at the start; with
    `tag_first`, the first sentence is tagged whatever it carries: a live text's next piece)."""
    written = [t.offset for t in tags if isinstance(t, EmotionTag)]
    auto, current = [], (None if tag_first else ("neutral", 1.0))
    for start, end in sentences(text):
        mine = [o for o in written if start <= o < end or (o < start and not text[o:start].strip())]
        if mine:
            current = ("", 0.0)  # the writer's emotion: the next untagged sentence sets its own again
            continue
        emotion = sentence_emotion(text[start:end])
        if current is None or emotion[0] != current[0] or abs(emotion[1] - current[1]) > 0.25:
            auto.append(EmotionTag(start, *emotion))
            current = emotion
    return sorted([*tags, *auto], key=lambda t: t.offset)
