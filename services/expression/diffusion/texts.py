"""Seeded English script generator for training data: statements, questions, exclamations and
lists with commas, drawn from a vocabulary rich in every viseme (bilabials, rounded vowels, ...)."""
from __future__ import annotations

import numpy as np

SUBJECTS = ["the baker", "my brother", "a small boy", "the old man", "our teacher", "the pilot", "my mother",
            "the farmer", "a famous painter", "the people next door", "Maria", "Bob", "the team", "we",
            "they", "you", "the doctor", "the musician", "a brave mouse", "the puppy", "Peter", "my boss"]
VERBS = ["bought", "moved", "played", "built", "found", "painted", "measured", "mopped", "borrowed",
         "opened", "brought", "pushed", "watched", "wrapped", "fixed", "cooked", "packed", "bumped into",
         "promised", "remembered", "followed", "enjoyed", "ate", "threw", "chose", "visited", "loved"]
OBJECTS = ["a bottle of milk", "the blue boat", "some purple plums", "a map of Boston", "the big umbrella",
           "a box of apples", "the broken window", "an awful movie", "the morning paper", "a huge pumpkin",
           "the museum", "a bowl of soup", "two warm muffins", "the shop by the beach", "a cheap phone",
           "the whole room", "a booth by the pool", "my favourite book", "the bright yellow balloon",
           "a new oven", "the smooth marble", "both the maps", "a few photos", "the zoo"]
PLACES = ["in the park", "at home", "before breakfast", "on Monday", "by the river", "after the storm",
          "in the morning", "under the bridge", "behind the barn", "at the market", "near the pub",
          "during the summer", "with a smile", "without a word", "every evening", "at midnight"]
ADVERBS = ["quickly", "slowly", "happily", "probably", "maybe", "obviously", "really", "perhaps",
           "honestly", "simply", "carefully", "suddenly"]
OPENERS = ["Well", "Oh", "You know", "By the way", "Believe me", "Look", "Hmm", "So", "Anyway", "Please"]
QUESTIONS = ["Why did {s} {v_base} {o}?", "Do you think {s} {v} {o} {p}?", "Who {v} {o}?",
             "Where is {o}?", "Would you mind moving {o}?", "Is it true that {s} {v} {o}?",
             "How much was {o}?", "Can you imagine {o} {p}?"]
EXCLAIMS = ["What a beautiful day!", "Amazing!", "That was wonderful!", "Oh my goodness!",
            "Stop it, please!", "Bravo!", "I can't believe it!", "Boom!", "Perfect!"]
BASE = {"bought": "buy", "moved": "move", "played": "play", "built": "build", "found": "find",
        "painted": "paint", "measured": "measure", "mopped": "mop", "borrowed": "borrow", "opened": "open",
        "brought": "bring", "pushed": "push", "watched": "watch", "wrapped": "wrap", "fixed": "fix",
        "cooked": "cook", "packed": "pack", "bumped into": "bump into", "promised": "promise",
        "remembered": "remember", "followed": "follow", "enjoyed": "enjoy", "ate": "eat",
        "threw": "throw", "chose": "choose", "visited": "visit", "loved": "love"}


def _pick(rng: np.random.Generator, items: list[str]) -> str:
    return items[int(rng.integers(len(items)))]


def _statement(rng: np.random.Generator) -> str:
    parts = [_pick(rng, SUBJECTS), _pick(rng, VERBS), _pick(rng, OBJECTS)]
    if rng.random() < 0.5:
        parts.insert(1, _pick(rng, ADVERBS))
    if rng.random() < 0.7:
        parts.append(_pick(rng, PLACES))
    text = " ".join(parts)
    if rng.random() < 0.3:
        text = f"{_pick(rng, OPENERS)}, {text}"
    if rng.random() < 0.25:
        text += f", and {_pick(rng, SUBJECTS)} {_pick(rng, VERBS)} {_pick(rng, OBJECTS)}"
    return text[0].upper() + text[1:] + "."


def _question(rng: np.random.Generator) -> str:
    v = _pick(rng, VERBS)
    text = _pick(rng, QUESTIONS).format(s=_pick(rng, SUBJECTS), v=v, v_base=BASE[v], o=_pick(rng, OBJECTS),
                                        p=_pick(rng, PLACES))
    return text[0].upper() + text[1:]


def script(rng: np.random.Generator) -> str:
    """One to three sentences, about 2-8 seconds of speech."""
    sentences = []
    for _ in range(int(rng.integers(1, 4))):
        r = rng.random()
        sentences.append(_statement(rng) if r < 0.6 else _question(rng) if r < 0.85 else _pick(rng, EXCLAIMS))
    return " ".join(sentences)
