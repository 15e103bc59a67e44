"""SSML scripts (services/common/script/ssml.py): what a cloud-TTS backend already writes is spoken, paused
and captioned as our own script would be; malformed SSML is a clear error on the field."""
from __future__ import annotations

import pytest

from services.common.domain.errors import InputError
from services.common.script.ssml import from_ssml


def test_ssml_becomes_our_script() -> None:
    assert from_ssml('<speak>Hello <break time="700ms"/> there, <emphasis level="strong">friend</emphasis>.</speak>') \
        == "Hello [pause 0.7] there, friend."
    assert from_ssml('<speak version="1.1" xmlns="http://www.w3.org/2001/10/synthesis"><p><s>First one</s>'
                     '<s>Second &amp; last.</s></p><break strength="strong"/>[happy] <sub alias="World Wide Web">'
                     'WWW</sub> <prosody rate="fast">rocks</prosody>.<mark name="m1"/><audio src="x.wav"/></speak>') \
        == "First one.\nSecond & last.\n[pause 0.75] [happy] World Wide Web rocks."
    assert from_ssml("<speak>One <break/> two</speak>") == "One [pause 0.5] two"  # medium by default
    assert from_ssml('<?xml version="1.0"?>\n<speak>One <break time="2s"/> two</speak>') == "One [pause 2] two"
    # a plain script: only <break/> is read; other angle brackets are text
    assert " ".join(from_ssml('Wait <break time="1.5s" /> for it. Is 3 < 4?').split()) == "Wait [pause 1.5] for it. Is 3 < 4?"
    assert from_ssml("No markup: 3 < 4 > 2.") == "No markup: 3 < 4 > 2."


@pytest.mark.parametrize("script,words", [
    ('<speak>Hello <break time="soon"/></speak>', "milliseconds"),
    ('<speak>Hello <break strength="huge"/></speak>', "strength"),
    ("<speak>Hello <b>bold</speak>", "does not parse"),
    ("<speak><video>x</video></speak>", "not supported"),
    ('<!DOCTYPE speak [<!ENTITY a "aaaa">]><speak>&a;&a;</speak>', "not accepted"),
    ('<speak><!ENTITY a "x"> Hi</speak>', "not accepted"),
])
def test_bad_ssml_is_an_input_error_on_the_field(script, words) -> None:
    with pytest.raises(InputError) as info:
        from_ssml(script, "script_asset")
    assert info.value.field == "script_asset" and words in info.value.message


def test_an_ssml_script_is_spoken_with_its_breaks_and_captioned_without_markup() -> None:
    from services.common.domain.captions import build_cues
    from services.pipeline import EmbeddedPipeline, VideoRequest

    request = VideoRequest(photo=b"x", script='<speak><s>The answer is simple</s> <break time="1200ms"/> '
                                              '<s>It is <emphasis>forty-two</emphasis></s></speak>')
    request.validate()
    speech, _ = EmbeddedPipeline().speech(request)
    words = [w.text for w in speech.words]
    assert words == ["The", "answer", "is", "simple", "It", "is", "forty-two"], words
    gap = speech.words[4].start - speech.words[3].end
    assert 1.15 <= gap < 1.35, gap
    cues = [c.text for c in build_cues(speech.words, speech.text, speech.duration)]  # as the pipeline makes them
    assert cues and not any("<" in c or "[" in c for c in cues), cues
    assert " ".join(cues).split() == ["The", "answer", "is", "simple.", "It", "is", "forty-two."]
