"""What a face can be directed to do: its emotions, how expressive it is, and the head and face motions a
script asks for ("[nod]", "[wink left]") with how long each moves the face from its time code. The one
vocabulary the script language, the request, the expression stage and the API's enums (infra.wire) share."""
from __future__ import annotations

EMOTIONS = ("neutral", "happy", "sad", "angry", "surprised")
EXPRESSIVENESS = ("low", "medium", "high")
MOTIONS = ("nod", "shake", "tilt_left", "tilt_right", "look_left", "look_right", "look_up", "look_down",
           "raise_brows", "wink_left", "wink_right")
# (the room a motion after the last words needs)
SECONDS = {"nod": 0.9, "shake": 1.2, "tilt_left": 1.85, "tilt_right": 1.85, "look_left": 1.9, "look_right": 1.9,
           "look_up": 1.9, "look_down": 1.9, "raise_brows": 1.05, "wink_left": 0.5, "wink_right": 0.5}
