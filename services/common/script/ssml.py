"""SSML in, our script out: backends that already write SSML for a cloud TTS can send it as it is.

    <speak>Hello <break time="700ms"/> there, <emphasis>friend</emphasis>.</speak>
      -> Hello [pause 0.7] there, friend.

A script whose text starts with <speak> (or an XML declaration) is parsed as SSML (W3C SSML 1.1, the
subset every cloud voice shares): <break time="..."/> (s or ms) or strength (x-weak ... x-strong)
becomes a pause tag, <sub alias="..."> speaks its alias, <p> and <s> end their sentence (with a full
stop if it has none), and the text of <emphasis>, <prosody>, <say-as>, <phoneme>, <voice>, <lang> is
spoken as written (rate, pitch and voice changes inside a script are not ours to make: speed and
voice are per request); <audio> and <mark> are dropped. A <break .../> in a plain script (as some
voice tools write it) becomes a pause too. Our own tags ("[happy]", "[nod]", "[pause 1]") may appear
in SSML text. Malformed SSML is an InputError on the field.
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

from services.common.domain.errors import InputError

BREAK_STRENGTH_S = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.2}
_BARE_BREAK = re.compile(r"<break\b([^<>]*?)/?>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r"""(\w+)\s*=\s*["']([^"']*)["']""")
_SPOKEN_AS_WRITTEN = {"emphasis", "prosody", "say-as", "phoneme", "voice", "lang", "w", "token", "speak"}
_SENTENCE = {"p", "s", "paragraph", "sentence"}


def is_ssml(text: str) -> bool:
    return text.lstrip().lower().startswith(("<speak", "<?xml", "<!doctype"))


def _break_seconds(attributes: dict[str, str], field: str) -> float:
    time_value = attributes.get("time")
    if time_value is not None:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s)\s*", time_value, re.IGNORECASE)
        if not match:
            raise InputError(field, f"SSML <break time={time_value!r}>: give seconds or milliseconds ('1.5s', '500ms')")
        return float(match.group(1)) / (1000.0 if match.group(2).lower() == "ms" else 1.0)
    strength = attributes.get("strength", "medium").lower()
    if strength not in BREAK_STRENGTH_S:
        raise InputError(field, f"SSML <break strength={strength!r}>: one of {', '.join(BREAK_STRENGTH_S)}")
    return BREAK_STRENGTH_S[strength]


def _pause(seconds: float) -> str:
    return f" [pause {seconds:g}] " if seconds > 0 else " "


def from_ssml(text: str, field: str = "script") -> str:
    """The script an SSML document (or a plain script with <break/> tags) says; other text as it is."""
    if not is_ssml(text):
        if "<break" not in text.lower():
            return text
        return _BARE_BREAK.sub(lambda m: _pause(_break_seconds(dict(_ATTRIBUTE.findall(m.group(1))), field)), text)
    if "<!" in text:  # SSML needs no DTD or entities; refusing them rules out entity-expansion bombs
        raise InputError(field, "SSML with <!DOCTYPE>, <!ENTITY> or <![CDATA[ ]]> is not accepted")
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as exc:
        raise InputError(field, f"SSML does not parse: {exc}") from None
    pieces: list[str] = []

    def walk(element: ElementTree.Element) -> None:
        tag = element.tag.rsplit("}", 1)[-1].lower()  # (an xmlns prefix off)
        if tag == "break":
            pieces.append(_pause(_break_seconds(element.attrib, field)))
        elif tag == "sub":
            pieces.append(element.get("alias", element.text or ""))
        elif tag not in ("audio", "mark", "desc"):
            if tag not in _SPOKEN_AS_WRITTEN and tag not in _SENTENCE:
                raise InputError(field, f"SSML <{tag}> is not supported (<break>, <sub>, <p>, <s>, <emphasis>, "
                                        "<prosody>, <say-as>, <phoneme>, <voice>, <lang>, <audio>, <mark> are)")
            pieces.append(element.text or "")
            for child in element:
                walk(child)
            if tag in _SENTENCE:  # a sentence ends here, said as one ("First one" -> "First one.")
                said = "".join(pieces).rstrip()
                pieces.append("\n" if not said or said[-1] in ".!?:;" else ".\n")
        pieces.append(element.tail or "")

    walk(root)
    return "\n".join(" ".join(line.split()) for line in "".join(pieces).splitlines() if line.strip())
