"""The WebRTC front's own rules, without the platform: the playout's clock and interrupt, and the HTTP
refusals that come before any pipeline (API keys, the query). The browser and the pipeline:
tests/test_platform_webrtc.py."""
from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from services.gateway import auth
from services.gateway.aio import AsyncGateway
from services.gateway.webrtc import AUDIO_RATE, AUDIO_SAMPLES, HttpError, Playout, WebRtcFront, _header, ice_servers

KEY = "k" * 24


def _tone(seconds: float) -> np.ndarray:
    n = int(seconds * AUDIO_RATE)
    return (8000 * np.sin(np.arange(n) * 2 * np.pi * 440 / AUDIO_RATE)).astype(np.int16)


def test_the_playout_follows_the_audio_and_an_interrupt_silences_it_until_the_cut():
    playout = Playout()
    assert playout.take_frame() is None and not playout.take_audio().any()  # nothing yet: silence
    playout.add_audio(0.0, _tone(2.0))
    for n in range(50):
        playout.add_video(n * 0.04, f"frame {n}")
    assert playout.take_audio().any() and playout.take_frame() == "frame 0"
    for _ in range(24):  # 0.5 s of audio: the face follows the audio's clock
        playout.take_audio()
    assert playout.position == pytest.approx(0.5) and playout.take_frame() == "frame 12"
    playout.interrupt()  # the user spoke: silence at once, the face holds
    assert not playout.take_audio().any() and playout.take_frame() == "frame 12"
    playout.cut_at(1.0)  # the pipeline cut the speech at 1.0 s: from there the timeline plays again
    while playout.position < 0.98:
        assert not playout.take_audio().any() and playout.take_frame() == "frame 12"
    playout.take_audio()
    assert playout.take_audio().any() and playout.take_frame() == "frame 25"


def test_the_playout_waits_for_a_late_pipeline_instead_of_skipping():
    playout = Playout()
    playout.add_audio(0.0, _tone(0.05))
    playout.take_audio(), playout.take_audio()
    before = playout.position
    assert not playout.take_audio().any() and playout.position == before  # late: silence, the clock waits
    playout.add_audio(0.0, _tone(0.05))
    assert playout.take_audio().any() and playout.position == pytest.approx(before + AUDIO_SAMPLES / AUDIO_RATE)


def test_the_query_becomes_a_live_header_and_nonsense_is_refused_in_one_bounded_line():
    header = _header({"photo": "ab" * 32, "voice": "kokoro-female", "speed": "1.2", "seed": "7"})
    assert header.photo.asset_id == "ab" * 32 and header.speech.voice == "kokoro-female"
    assert header.speech.speed == pytest.approx(1.2) and header.seed == 7
    for query, field in (({"speed": "fast"}, "speed:"), ({"seed": "-1"}, "seed:"), ({"x" * 10_000: "1"}, "xxx")):
        with pytest.raises(HttpError) as info:
            _header(query)
        assert info.value.status == 400 and info.value.message.startswith(field) and len(info.value.message) < 200


def test_ice_servers_come_from_the_setting(monkeypatch):
    monkeypatch.setenv("LIKENESS_WEBRTC_ICE_SERVERS", "stun:stun.example:3478, turn:ann:secret@turn.example:3478")
    stun, turn = ice_servers()
    assert stun.urls == "stun:stun.example:3478"
    assert (turn.urls, turn.username, turn.credential) == ("turn:turn.example:3478", "ann", "secret")


@pytest.fixture
def front_url(tmp_path):
    """The front on a loopback port with API keys on (no servicer: these calls never reach one)."""
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"team-a:{KEY}\n")
    gateway = AsyncGateway(None, keys=auth.ApiKeys(keys_file))
    ready, loop = threading.Event(), asyncio.new_event_loop()
    state = {}

    async def start():
        state["runner"], state["port"] = await WebRtcFront(gateway, "127.0.0.1").start(0)
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()), loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10)
    yield f"http://127.0.0.1:{state['port']}"
    asyncio.run_coroutine_threadsafe(state["runner"].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def _call(url: str, method: str = "POST", body: bytes = b"v=0\r\n", headers: dict | None = None):
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/sdp", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def test_with_api_keys_the_front_asks_for_one_as_grpc_does(front_url):
    status, body, headers = _call(front_url + "/v1/live?photo=" + "a" * 64)
    assert status == 401 and headers.get("WWW-Authenticate") == "Bearer" and "Bearer" in body
    status, body, _ = _call(front_url + "/v1/live?photo=" + "a" * 64, headers={"Authorization": "Bearer " + "x" * 24})
    assert status == 401 and body.strip() == "unknown API key"
    assert _call(front_url + "/v1/assets?kind=photo", body=b"\xff\xd8")[0] == 401
    assert _call(front_url + "/v1/live/" + "0" * 32, method="DELETE")[0] == 401
    # with the key: what the query and the body say is checked before any pipeline starts
    key = {"Authorization": "Bearer " + KEY}
    status, body, _ = _call(front_url + "/v1/live?photo=x", body=b"not sdp", headers={**key, "Content-Type": "text/plain"})
    assert status == 415 and body.count("\n") == 1
    assert _call(front_url + "/v1/live/" + "0" * 32, method="DELETE", headers=key)[0] == 404
    status, body, _ = _call(front_url + "/", method="GET")  # the page itself holds nothing of anyone's
    assert status == 200 and "likeness.connect" in body


def test_data_channel_messages_become_the_live_streams_requests():
    from likeness_client.proto.likeness.v1 import gateway_pb2 as gw
    from services.gateway.webrtc import Session

    async def run() -> list:
        session = Session(None, "", gw.LiveVideoHeader())
        session.playout.add_audio(0.0, _tone(1.0))
        for raw in ('{"text": "Hello "}', '{"listening": true}', '{"interrupt": true}', '{"end": true}',
                    '{"text": 3}', "not json", '{"text": "a", "end": true}', '{"x": "' + "y" * 20_000 + '"}'):
            session.on_message(raw)
        return [next(session.requests) for _ in range(5)], session.requests._queue.empty(), session.playout

    requests, nothing_else, playout = asyncio.run(run())
    assert [r.WhichOneof("request") for r in requests] == ["header", "text", "listening", "interrupt", "end_of_audio"]
    assert requests[1].text == "Hello " and requests[2].listening is True
    assert nothing_else  # (the malformed ones were answered on the channel, not passed on)
    assert not playout.take_audio().any()  # the interrupt silenced the playout at once
