"""Photo + script -> talking video: the request every path shares and the embedded pipeline.

- `request`: VideoRequest, its rules (check_inputs) and its parsing from the API's messages.
- `speech_rules`: what a script says and in which voice (a part of those rules).
- `embedded`: EmbeddedPipeline, every stage in-process (`likeness generate`, no servers).
- `dialogue`: DialoguePipeline, a scripted dialogue: several faces talking in turns, each in its panel.
- `live`: its live videos (`likeness live`): audio as it is spoken or text as it is written in, MP4 out.
"""
from services.pipeline.embedded import EmbeddedPipeline, LiveResult, VideoResult, check_output_path
from services.pipeline.request import LIVE_AUDIO, LIVE_TEXT, VIDEO, Stored, VideoRequest, check_inputs

__all__ = ["EmbeddedPipeline", "LiveResult", "VideoResult", "check_output_path", "LIVE_AUDIO", "LIVE_TEXT",
           "VIDEO", "Stored", "VideoRequest", "check_inputs"]
