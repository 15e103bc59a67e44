"""Emotion tags in a script ("[happy] ... [sad 0.6] ..."): parsed out before speaking and captioning,
timed by the spoken words, and the face follows them (embedded pipeline; the gateway in
tests/test_platform_jobs.py)."""
from __future__ import annotations

import numpy as np
import pytest

from services.common.domain.arkit import INDEX
from services.common.script.tags import LEAD_S, EmotionTag, strip_tags, timed_emotions
from services.common.domain.errors import InputError
from services.common.domain.speech import Word

SCRIPT = "[happy] What a wonderful morning this is, I love it. [sad] But then the rain came and ruined everything."


def test_tags_are_taken_out_of_the_script():
    text, tags = strip_tags("[happy] We made it! [SAD 0.6] Not everyone did. [neutral:0.5] Here [sic] is the plan.")
    assert text == "We made it! Not everyone did. Here [sic] is the plan."
    assert tags == [EmotionTag(0, "happy", 1.0), EmotionTag(12, "sad", 0.6), EmotionTag(30, "neutral", 0.5)]
    assert text[12:15] == "Not" and text[30:34] == "Here"  # offsets point at the words that follow
    assert strip_tags("No tags, [brackets] stay.") == ("No tags, [brackets] stay.", [])
    for bad in ("[happy 0] Hi.", "[happy 1.5] Hi.", "[happy x] Hi."):
        with pytest.raises(InputError, match="strength") as info:
            strip_tags(bad)
        assert info.value.field == "script"


def test_tags_are_timed_by_the_words_after_them():
    text, tags = strip_tags("[happy] One two. [sad] Three four. Five [angry]")
    words = [Word("One", 0.1, 0.4), Word("two", 0.5, 0.9), Word("Three", 1.5, 1.9), Word("four", 2.0, 2.4),
             Word("Five", 2.6, 3.0)]
    assert timed_emotions(tags, words, text) == [(0.0, "happy", 1.0), (1.5 - LEAD_S, "sad", 1.0)]  # "angry": no word after


@pytest.fixture(scope="module")
def pipeline():
    from services.pipeline import EmbeddedPipeline

    return EmbeddedPipeline()


def _mean(track, names, start_s, end_s):
    a, b = int(start_s * track.fps), int(end_s * track.fps)
    return float(track.weights[a:b, [INDEX[n] for n in names]].mean())


def test_the_face_follows_the_tags(pipeline):
    from services.pipeline import VideoRequest

    request = VideoRequest(photo=b"unused", script=SCRIPT)
    speech, _ = pipeline.speech(request)
    assert "[" not in speech.text and speech.words[0].text == "What"
    track = pipeline.expression(speech, request)
    but = next(w for w in speech.words if w.text == "But")
    smile, frown = ("mouthSmileLeft", "mouthSmileRight"), ("mouthFrownLeft", "mouthFrownRight", "browInnerUp")
    happy_part, sad_part = (0.3, but.start - 0.3), (but.start + 0.5, speech.duration)
    assert _mean(track, smile, *happy_part) > _mean(track, smile, *sad_part) + 0.1
    assert _mean(track, frown, *sad_part) > _mean(track, frown, *happy_part) + 0.1
    plain = pipeline.expression(speech, VideoRequest(photo=b"unused", script=strip_tags(SCRIPT)[0]))
    assert _mean(plain, smile, *happy_part) < _mean(track, smile, *happy_part) - 0.1  # the tag did it
    with pytest.raises(InputError, match="nothing to say"):
        VideoRequest(photo=b"unused", script="[happy] [pause 1] [sad]").validate()


def test_a_mistyped_tag_is_read_out_with_a_warning_and_other_brackets_pass():
    from services.common.script.tags import near_misses

    text, tags = strip_tags("[happpy] Hello [sic] there. [look lef] [tilt] [pause 1] [nodd 0.5] Done. [Note]")
    assert tags == [] and text.startswith("[happpy] Hello [sic] there.")
    warnings = near_misses(text)
    assert [w.split(" is not a tag")[0] for w in warnings] == ["[happpy]", "[look lef]", "[tilt]", "[nodd 0.5]"]
    assert "[happy]" in warnings[0] and "[look left]" in warnings[1] and "[tilt left] or [tilt right]" in warnings[2]


def test_the_embedded_pipeline_reports_a_mistyped_tag():
    from services.pipeline import EmbeddedPipeline, VideoRequest

    speech, warnings = EmbeddedPipeline().speech(VideoRequest(photo=b"x", script="Hello [wnik left] there."))
    assert [w.text for w in speech.words][:1] == ["Hello"]
    assert warnings == ["script: [wnik left] is not a tag (did you mean [wink left]?): it is read out as text"]
