"""Pause tags ("[pause]", "[pause 1.5]"): silence where written, the timeline still exact, and
emotion tags and captions still in step (services/common/script/pauses.py, services/common/speech.join_speech)."""
from __future__ import annotations

import numpy as np
import pytest

from services.common.domain.errors import InputError
from services.common.script.pauses import DEFAULT_PAUSE_S, split_pauses, strip_pauses


def test_pause_tags_split_the_script():
    assert split_pauses("No pauses.") == [("No pauses.", 0.0)]
    assert split_pauses("One. [pause] Two. [PAUSE 1.5] Three.") == [("One.", DEFAULT_PAUSE_S), ("Two.", 1.5),
                                                                     ("Three.", 0.0)]
    assert split_pauses("[pause 1] One. [pause:2s] [pause 0.5]") == [("", 1.0), ("One.", 2.5)]
    assert strip_pauses("One. [pause 2] Two.") == "One. Two."
    for bad in ("Hi [pause 0] there", "Hi [pause 11] there", "Hi [pause x] there"):
        with pytest.raises(InputError, match="pause tag") as info:
            split_pauses(bad)
        assert info.value.field == "script"


@pytest.fixture(scope="module")
def pipeline():
    from services.pipeline import EmbeddedPipeline

    return EmbeddedPipeline()


@pytest.mark.parametrize("voice", ["joe", "kokoro-female"])
def test_a_pause_is_silence_in_an_exact_timeline(pipeline, voice):
    from services.pipeline import VideoRequest

    plain, _ = pipeline.speech(VideoRequest(photo=b"x", script="The answer is simple. It is forty-two.", voice=voice))
    paused, _ = pipeline.speech(VideoRequest(photo=b"x", script="[happy] The answer is simple. [pause 1.5] "
                                                                "[sad] It is forty-two.", voice=voice))
    assert paused.text == "The answer is simple. It is forty-two."
    assert [w.text for w in paused.words] == [w.text for w in plain.words]
    it = next(i for i, w in enumerate(paused.words) if w.text == "It")
    gap = paused.words[it].start - paused.words[it - 1].end
    assert 1.45 <= gap < 1.6, gap  # word to word: the voice's own silence counts toward the pause
    rate = paused.sample_rate
    a, b = int((paused.words[it - 1].end + 0.3) * rate), int((paused.words[it].start - 0.3) * rate)
    assert b - a > 0.8 * rate and np.abs(paused.audio[a:b]).max() < 1e-3  # silence (the voice's own tail aside)
    for phone in paused.phones:  # phones still tile the audio and point at their words
        assert 0 <= phone.start <= phone.end <= paused.duration + 1e-6
        if phone.word_index >= 0:
            word = paused.words[phone.word_index]
            assert word.start - 0.05 <= phone.start and phone.end <= word.end + 0.05
    # the emotion tag after the pause acts at the word after it
    track = pipeline.expression(paused, VideoRequest(photo=b"x", script="[happy] The answer is simple. [pause 1.5] "
                                                                        "[sad] It is forty-two."))
    from services.common.domain.arkit import INDEX

    frown = track.weights[:, INDEX["mouthFrownLeft"]]
    t = paused.words[it].start
    assert frown[int((t + 0.6) * track.fps):].mean() > frown[:int((t - 1.0) * track.fps)].mean() + 0.1
    # a pause after the last words is silence at the end, with one piece of speech as with several
    ending, _ = pipeline.speech(VideoRequest(photo=b"x", script="It is forty-two. [pause 2]", voice=voice))
    assert 1.95 <= ending.duration - ending.words[-1].end < 2.1, ending.duration - ending.words[-1].end


def test_only_tags_or_a_bad_pause_is_refused_before_work():
    from services.pipeline import VideoRequest

    for script, match in (("[pause 2]", "nothing to say"), ("Hello [pause 99] there.", "pause tag")):
        with pytest.raises(InputError, match=match) as info:
            VideoRequest(photo=b"x", script=script).validate()
        assert info.value.field == "script"
