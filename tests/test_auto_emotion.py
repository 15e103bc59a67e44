"""Emotion "auto": each sentence of a script gets the emotion its words carry (services.common.
auto_emotion, VADER's lexicon from its wheel), the writer's own tags winning; the face follows."""
from __future__ import annotations

import numpy as np
import pytest

from services.common.domain.arkit import INDEX
from services.common.script.auto_emotion import sentence_emotion, with_auto_emotions
from services.common.domain.errors import InputError
from services.common.script.tags import EmotionTag, MotionTag, strip_tags


@pytest.mark.parametrize("sentence,emotion", [
    ("We won the championship!", "happy"),
    ("What a wonderful morning this is, I love it.", "happy"),
    ("I'm so sorry for your loss.", "sad"),
    ("Unfortunately, the project was cancelled.", "sad"),
    ("This is unacceptable!", "angry"),
    ("I hate it when the train is late.", "angry"),
    ("Wait, what?!", "surprised"),
    ("Wow, I did not expect that.", "surprised"),
    ("Here is the plan for next quarter.", "neutral"),
    ("The meeting is at nine.", "neutral"),
    ("There is no way to know yet.", "neutral"),
    ("[pause 1]", "neutral"),
])
def test_a_sentence_gets_the_emotion_its_words_carry(sentence, emotion) -> None:
    name, strength = sentence_emotion(sentence)
    assert name == emotion and 0.3 <= strength <= 1.0


def test_sentences_are_cut_where_captions_and_live_text_cut_them() -> None:
    from services.common.script.auto_emotion import sentences

    text = "I met Dr. Smith at 3 p.m. today. Sadly, he was ill!  What?! Yes"
    assert [text[a:b] for a, b in sentences(text)] == ["I met Dr. Smith at 3 p.m. today.", "Sadly, he was ill!",
                                                       "What?!", "Yes"]
    text, tags = strip_tags("The meeting is at nine. Our Dr. Smith was wonderful and so kind to us!")
    out = with_auto_emotions(text, tags)  # one glad sentence: tagged at its start, not again at "Smith"
    assert [(text[t.offset:].split()[0], t.emotion) for t in out] == [("Our", "happy")]


def test_sentences_are_tagged_where_the_emotion_changes_and_the_writers_tags_win() -> None:
    text, tags = strip_tags("Here is the news. We won the cup! We really won it! Sadly, our captain was hurt. "
                            "[surprised] She is fine. The next game is on Monday. [nod] See you there.")
    out = with_auto_emotions(text, tags)
    emotions = [(text[t.offset:].split()[0], t.emotion) for t in out if isinstance(t, EmotionTag)]
    # no tag for the neutral start, one for the two glad sentences, the writer's "surprised" kept as written
    assert emotions == [("We", "happy"), ("Sadly,", "sad"), ("She", "surprised"), ("The", "neutral")]
    assert [t for t in out if isinstance(t, MotionTag)] == [t for t in tags if isinstance(t, MotionTag)]
    assert [t.offset for t in out] == sorted(t.offset for t in out)
    first = with_auto_emotions("The meeting is at nine.", [], tag_first=True)  # a live text's next piece
    assert [(t.offset, t.emotion) for t in first] == [(0, "neutral")]


def test_auto_emotion_drives_the_face_in_process() -> None:
    from services.pipeline import EmbeddedPipeline, VideoRequest

    pipeline = EmbeddedPipeline()
    request = VideoRequest(photo=b"x", script="We won the cup, what a wonderful day! Sadly, our captain was badly "
                                              "hurt and everyone is heartbroken.", emotion="auto", seed=3)
    request.validate()
    speech, _ = pipeline.speech(request)
    track = pipeline.expression(speech, request)
    sadly = next(w for w in speech.words if w.text.startswith("Sadly")).start
    fps = track.fps
    smile = track.weights[:, [INDEX["mouthSmileLeft"], INDEX["mouthSmileRight"]]].mean(axis=1)
    frown = track.weights[:, [INDEX["mouthFrownLeft"], INDEX["mouthFrownRight"]]].mean(axis=1)
    glad, sorry = slice(int(0.3 * fps), int((sadly - 0.3) * fps)), slice(int((sadly + 0.5) * fps), None)
    assert smile[glad].mean() > smile[sorry].mean() + 0.1
    assert frown[sorry].mean() > frown[glad].mean() + 0.05
    plain = pipeline.expression(speech, VideoRequest(photo=b"x", script=request.script, seed=3))  # neutral
    assert smile[glad].mean() > plain.weights[glad][:, [INDEX["mouthSmileLeft"], INDEX["mouthSmileRight"]]].mean() + 0.1
    with pytest.raises(InputError) as info:  # from audio there are no words to read
        pipeline.live(request, iter([np.zeros(1600, np.float32)]), 16000, lambda data: None)
    assert info.value.field == "emotion"
