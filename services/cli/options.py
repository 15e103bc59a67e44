"""The option groups several commands share (the photo and script, speech, framing, the face's
directions, captions, reaching a gateway), the allowed values of the enum-valued options, and the
parser that refuses a value outside them the CLI's way.

An option's allowed values come from the module that defines them (`Choices`), read on first use:
building the parser imports none of the stages, so `likeness --help` stays quick.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence

from services.cli.helpers import package_version
from services.common import config
from services.common.domain.errors import InputError

EXIT_BAD_INPUT = 2


class Choices(Sequence[str]):
    """An option's allowed values (argparse's `choices=`), loaded by `load` when first needed: to check a
    value given on the command line, or to list them in `--help` (`%(choices)s`). A value outside them is
    InputError(field, "unknown WHAT 'x'; supported: a, b, c"), the words the request's own check uses.
    `lenient`: compared stripped and lowercased, and blank means the default (as services.tts.check_voice)."""

    def __init__(self, field: str, what: str, load: Callable[[], Iterable[str]], *, lenient: bool = False) -> None:
        self.field, self.what, self.lenient = field, what, lenient
        self._load = load
        self._values: tuple[str, ...] | None = None

    @property
    def values(self) -> tuple[str, ...]:
        if self._values is None:
            self._values = tuple(self._load())
        return self._values

    def __getitem__(self, index):
        return self.values[index]

    def __len__(self) -> int:
        return len(self.values)

    def check(self, value: str, option: str = "") -> None:
        """InputError unless `value` is one of them; `option` ("--voice-name") is named when it is not the field."""
        key = value.strip().lower() if self.lenient else value
        if self.lenient and not key or key in self.values:
            return
        named = f" ({option})" if option and option.lstrip("-") != self.field else ""
        raise InputError(self.field, f"unknown {self.what} {value!r}{named}; supported: {', '.join(self.values)}")


def _emotions() -> Sequence[str]:
    from services.pipeline.request import EMOTIONS  # the domain's emotions and "auto"

    return EMOTIONS


def _expressiveness() -> Sequence[str]:
    from services.common.domain.directions import EXPRESSIVENESS

    return EXPRESSIVENESS


def _aspects() -> Iterable[str]:
    from services.render import ASPECTS

    return ASPECTS


def _fits() -> Sequence[str]:
    from services.render import FITS

    return FITS


def _voices() -> Iterable[str]:
    from services.tts import VOICES

    return VOICES


EMOTION = Choices("emotion", "emotion", _emotions)
EXPRESSIVENESS = Choices("expressiveness", "level", _expressiveness)
ASPECT = Choices("aspect", "aspect ratio", _aspects)
FIT = Choices("fit", "fit", _fits)
VOICE_NAME = Choices("voice", "voice", _voices, lenient=True)  # "voice": the request's field, as check_voice says


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a value outside an option's Choices is refused like every other bad input:
    one line `error: FIELD: message` on stderr and exit code 2 (not argparse's usage and "invalid choice")."""

    def _check_value(self, action: argparse.Action, value) -> None:
        if not isinstance(action.choices, Choices):
            return super()._check_value(action, value)
        try:
            action.choices.check(value, action.option_strings[0] if action.option_strings else "")
        except InputError as exc:
            self.exit(EXIT_BAD_INPUT, f"error: {exc}\n")


class VersionAction(argparse.Action):
    """`--version`: the installed package's version, read only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str = "print the version and exit") -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"{parser.prog} {package_version()}")
        parser.exit()


def _with_text_in(live: bool) -> str:
    return "with --text-in: " if live else ""


def photo_and_script_options(parser: argparse.ArgumentParser, *, dialogue: bool = False) -> None:
    """--photo, --script / --script-file and --audio: what a video is made of (`dialogue`: or --dialogue,
    so --photo is not required by the parser)."""
    group = parser.add_argument_group("photo and script")
    photo_option(group, required=not dialogue)
    script = group.add_mutually_exclusive_group()
    script.add_argument("--script", help="text to speak, with optional tags: [happy] / [sad 0.6] (emotion from "
                                         "the next word on), [nod] / [shake] / [tilt left] / [look right] / "
                                         "[raise brows] / [wink left] (a motion on the next word), [pause 1.5] "
                                         "(with --audio: what the recording says)")
    script.add_argument("--script-file", help="UTF-8 text file to speak")
    group.add_argument("--audio", help="your own recording (wav/mp3/m4a/ogg/webm; 1-300 s of speech, 3 s or "
                                       "more is better) to lip-sync to instead of synthesized speech; with "
                                       "--script it is aligned to the text")


def photo_option(parser, *, required: bool = True) -> None:
    parser.add_argument("--photo", required=required,
                        help="portrait photo (jpg/png/webp)" + ("" if required else "; required unless --dialogue"))


def speech_options(parser: argparse.ArgumentParser, *, live: bool = False) -> None:
    """--voice, --voice-name, --speed, --language: who speaks the script, how fast, in which language
    (`live`: they go with --text-in)."""
    first = _with_text_in(live)
    group = parser.add_argument_group("speech")
    group.add_argument("--voice", help=f"{first}a 1-60 s sample of a voice (10-30 s clones it best) (any text; wav/mp3/m4a/ogg/webm): "
                                       "the script is spoken in that voice")
    group.add_argument("--voice-name", choices=VOICE_NAME, metavar="NAME",
                       help=f"{first}a built-in voice: %(choices)s (`likeness voices`); default: joe")
    group.add_argument("--speed", type=float, default=1.0,
                       help=f"{first}speaking rate of the script, 0.5-2.0 (default 1)")
    group.add_argument("--language", default="en-us", help=f"{first}the script's language, an espeak-ng code "
                                                           "(default en-us; e.g. de, ru, cmn, ja for kana)")


def framing_options(parser: argparse.ArgumentParser, *, live: bool = False) -> None:
    """--size, --aspect, --fit, --background, --keypoints, --face-at, --fps: the frame and what is in it
    (`live`: no transparent background, a live video is MP4)."""
    group = parser.add_argument_group("framing")
    group.add_argument("--size", type=int, default=512,
                       help="the frame's shorter side in pixels, 128-1080 (default 512)")
    group.add_argument("--aspect", default="1:1", choices=ASPECT, metavar="W:H",
                       help="frame aspect ratio: %(choices)s (default %(default)s)")
    group.add_argument("--fit", default="cover", choices=FIT, metavar="FIT",
                       help="%(choices)s (default %(default)s): cover fills the frame around the face, "
                            "contain shows the whole photo, padded")
    group.add_argument("--background", help=("'#RRGGBB' or an image file" if live else
                                             "'#RRGGBB', 'transparent' or an image file")
                       + ": replaces the photo's background (person segmented)")
    group.add_argument("--keypoints", help="for faces no detector finds (pets, cartoons): 5 points "
                                           "'x,y;x,y;x,y;x,y;x,y' in photo pixels, or a JSON file: eye "
                                           "(image left), eye (image right), nose tip, mouth corner "
                                           "(image left), mouth corner (image right)")
    group.add_argument("--face-at", metavar="X,Y", help="a photo of several people: animate the face at this "
                                                        "point, in photo pixels (default: the largest face)")
    group.add_argument("--fps", type=float, default=25.0, help="frames per second (default 25)")


def direction_options(parser: argparse.ArgumentParser, *, live: bool = False) -> None:
    """--seed, --emotion, --expressiveness, --auto-motions, --motion, --emotion-at: how the face moves
    (`live`: --auto-motions goes with --text-in, the time-coded ones with --audio-in)."""
    group = parser.add_argument_group("face and motion")
    group.add_argument("--seed", type=int, default=0, help="seed for " + ("" if live else "voice variation, ")
                                                           + "blinks and head motion")
    group.add_argument("--emotion", default="neutral", choices=EMOTION, metavar="EMOTION",
                       help="%(choices)s (auto" + (", with --text-in" if live else "")
                            + ": each sentence as its words feel; default %(default)s)")
    group.add_argument("--expressiveness", default="medium", choices=EXPRESSIVENESS, metavar="LEVEL",
                       help="%(choices)s (default %(default)s)")
    group.add_argument("--auto-motions", action="store_true",
                       help=f"{_with_text_in(live)}nod on yes, shake on no, tilt on questions, without motion tags")
    at_audio = "with --audio-in: " if live else ""
    group.add_argument("--motion", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                       help=f"{at_audio}a motion at a time code (seconds from the start of the speech), e.g. "
                            "2.5:nod or '4:look left:0.5'; repeat for more ("
                            + ("with --text-in write [nod] tags)" if live else
                               "a recording without a transcript has no words for [nod] tags)"))
    group.add_argument("--emotion-at", action="append", default=[], metavar="SECONDS:NAME[:STRENGTH]",
                       help=f"{at_audio}an emotion from a time code on, e.g. 0:happy or 6.2:sad:0.7; repeatable")


def caption_options(parser: argparse.ArgumentParser, *, live: bool = False) -> None:
    """--captions (and, for a finished video, --burn-captions and --poster)."""
    group = parser.add_argument_group("captions and poster" if not live else "captions")
    group.add_argument("--captions", metavar="PATH",
                       help=f"{_with_text_in(live)}also write captions of what is said, timed by the spoken "
                            "words (.vtt or .srt)")
    if live:
        return
    group.add_argument("--burn-captions", action="store_true",
                       help="draw the captions into the video (needs the words: a script or a transcript)")
    group.add_argument("--poster", metavar="PATH",
                       help="also write a still for thumbnails: the first frame with the eyes open (.jpg or "
                            ".png; a transparent video's is a .png with alpha)")


def video_options(parser: argparse.ArgumentParser, *, dialogue: bool = False) -> None:
    """Every option of a finished video (`generate`, `submit`; `dialogue`: --dialogue may replace --photo)."""
    photo_and_script_options(parser, dialogue=dialogue)
    speech_options(parser)
    parser.add_argument("--out", required=True,
                        help="output: .mp4 (H.264 + AAC), .webm (VP9 + Opus; alpha with --background "
                             "transparent), a directory (PNG sequence + audio.wav), or - : fragmented MP4 to "
                             "stdout while it renders (pipe it into a player)")
    framing_options(parser)
    direction_options(parser)
    caption_options(parser)


def _layouts() -> Iterable[str]:
    from services.pipeline.request import LAYOUTS

    return LAYOUTS


LAYOUT = Choices("layout", "layout", _layouts)


def dialogue_options(parser: argparse.ArgumentParser) -> None:
    """--dialogue, --cast, --layout, --gap: several faces talking in turns (instead of --photo/--script)."""
    group = parser.add_argument_group("dialogue (instead of --photo and --script)")
    group.add_argument("--dialogue", metavar="SCRIPT", help="a dialogue script file: one 'NAME: text' line per "
                                                            "turn (tags as in --script)")
    group.add_argument("--cast", action="append", default=[], metavar="NAME=PHOTO[:voice=VOICE][:sample=FILE]",
                       help="who plays NAME: a photo and a built-in voice (or a voice sample to clone); one per "
                            "speaker, or a JSON file {\"NAME\": {\"photo\": ..., \"voice\": ...}}")
    group.add_argument("--layout", default="side-by-side", choices=LAYOUT, metavar="LAYOUT",
                       help="%(choices)s (default %(default)s: 16:9; stacked: 9:16)")
    group.add_argument("--gap", type=float, default=None, metavar="SECONDS",
                       help="from one turn's last word to the next's first (default 0.3)")


def gateway_options(parser: argparse.ArgumentParser, *, optional: bool = False) -> None:
    """--server, --api-key-file, --tls-ca: which gateway, and how to be let in (`optional`: without
    --server the command runs in-process)."""
    group = parser.add_argument_group("gateway")
    if optional:
        group.add_argument("--server", default="",
                           help="a gateway address (LiveVideo); default: in-process, no servers")
    else:
        group.add_argument("--server", default=config.get_str("LIKENESS_GATEWAY_ADDR"),
                           help="gateway address (default $LIKENESS_GATEWAY_ADDR or 127.0.0.1:50051)")
    first = "with --server: " if optional else ""
    group.add_argument("--api-key-file", default="",
                       help=f"{first}file holding the gateway's API key (default: $LIKENESS_API_KEY, if set)")
    group.add_argument("--tls-ca", default=config.get_str("LIKENESS_TLS_CA_FILE"),
                       help=f"{first}PEM root certificate of a gateway serving TLS (default $LIKENESS_TLS_CA_FILE)")
