"""The gateway's WebRTC front with a real headless Chromium on loopback: the page connects, the avatar
talks while its voice is heard, an interrupt silences voice and face at once, and the front refuses
what it must (docs/live.md#webrtc)."""
from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from services.devtools.browser import PROBE, USER_FLAGS, Browser, chromium

pytestmark = pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (make system-deps)")

SENTENCE = ("People bring maps and books to the big market by the bay, and they talk about the weather "
            "for a long while before anyone buys a thing. ")

@pytest.fixture(scope="module")
def browser(stack):
    page = Browser()
    try:
        yield page
    finally:
        page.close()


def _post(url: str, body: bytes, content_type: str = "application/sdp") -> tuple[int, str, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _connect(browser: Browser, stack, photo_id: str) -> None:
    browser.navigate(stack.webrtc_url)
    browser.evaluate(f"likeness.connect({photo_id!r}, '')", timeout_s=60)


def _wait(browser: Browser, expression: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not browser.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout_s} s: {expression}")
        time.sleep(0.05)


def _offer(browser: Browser) -> str:
    """A real offer of the browser's (a connection it never completes)."""
    return browser.evaluate("""(async () => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("video", { direction: "recvonly" });
      pc.addTransceiver("audio", { direction: "recvonly" });
      pc.createDataChannel("control");
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((r) => pc.iceGatheringState === "complete" ? r()
        : pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r()));
      window.spare = pc;
      return pc.localDescription.sdp;
    })()""")


def test_the_browser_sees_and_hears_the_avatar_and_an_interrupt_stops_both(stack, photo_id, browser):
    _connect(browser, stack, photo_id)
    assert browser.evaluate(PROBE) == "running"
    sent_at = browser.evaluate(f"(likeness.say({SENTENCE!r}), performance.now())")
    _wait(browser, "window.probe.some((s) => s.rms > 0.02)", 20)  # the voice is heard
    heard_at = browser.evaluate("window.probe.find((s) => s.rms > 0.02).t")
    time.sleep(2.0)
    interrupted_at = browser.evaluate("(likeness.interrupt(), performance.now())")
    time.sleep(1.2)
    probe = browser.evaluate("window.probe")
    first_frame_at = browser.evaluate("window.firstFrameAt")
    talking = [s for s in probe if heard_at + 300 <= s["t"] <= interrupted_at and s["motion"] is not None]
    after = [s for s in probe if interrupted_at + 300 <= s["t"] <= interrupted_at + 900]
    print(f"first frame {first_frame_at - sent_at:.0f} ms after connect+text; voice heard "
          f"{heard_at - sent_at:.0f} ms after the text")
    assert first_frame_at is not None and len(talking) > 20 and len(after) > 10
    # the mouth moves while the voice plays
    assert sum(s["rms"] > 0.02 for s in talking) > len(talking) / 2
    moving = sum(s["motion"] for s in talking) / len(talking)
    assert moving > 1.0, moving
    # within 0.3 s of the interrupt: silence, and the face holds still
    assert max(s["rms"] for s in after) < 0.005, [round(s["rms"], 4) for s in after]
    still = max(s["motion"] for s in after)
    assert still < moving / 4, (still, moving)
    went_silent = next(s["t"] for s in probe if s["t"] > interrupted_at and s["rms"] < 0.005)
    print(f"silent {went_silent - interrupted_at:.0f} ms after the interrupt; mouth region motion "
          f"{moving:.2f} talking, {still:.2f} at most after")
    _wait(browser, "likeness.messages.some((m) => m.interrupted)", 10)  # what the pipeline said it cut
    # a message the front does not know is answered on the channel, in one bounded line
    browser.evaluate("likeness.send({colour: 'x'.repeat(5000)})")
    _wait(browser, "likeness.messages.some((m) => m.error)", 5)
    assert len(browser.evaluate("likeness.messages.find((m) => m.error).error")) < 200
    # the end: the captions of what was said come back, and the front closes the connection itself
    browser.evaluate("likeness.send({end: true})")
    _wait(browser, "likeness.messages.some((m) => m.end)", 15)
    assert "WEBVTT" in browser.evaluate("likeness.messages.find((m) => m.end).end.captions")
    _wait(browser, "['closed', 'failed', 'disconnected'].includes(likeness.pc.connectionState)", 15)


def test_the_front_refuses_bad_offers_and_unknown_photos(stack, photo_id, browser):
    browser.navigate(stack.webrtc_url)
    url = stack.webrtc_url + "v1/live?photo="
    status, body, _ = _post(url + photo_id, b"this is not SDP\r\n" * 100)
    assert status == 400 and body.startswith("offer:") and body.count("\n") == 1, body
    status, body, _ = _post(url + "0" * 64, _offer(browser).encode())
    assert status == 400 and body.startswith("photo:"), body
    status, body, _ = _post(stack.webrtc_url + "v1/live?photo=" + photo_id + "&colour=" + "x" * 5000,
                            _offer(browser).encode())
    assert status == 400 and len(body) < 200 and "unknown parameter" in body, body


def test_one_session_too_many_waits_and_a_peer_that_disappears_frees_its_place(stack, photo_id, browser):
    """LIKENESS_MAX_STREAMS is 1 in the test platform: a second offer is refused with Retry-After; a
    browser killed outright (no DELETE, no DTLS close) frees the place within seconds."""
    other = Browser()
    try:
        _connect(other, stack, photo_id)
        browser.navigate(stack.webrtc_url)
        offer = _offer(browser).encode()
        status, body, headers = _post(stack.webrtc_url + "v1/live?photo=" + photo_id, offer)
        assert status == 429 and headers.get("Retry-After") == "2" and "streams" in body, (status, body)
    finally:
        other.kill()
    gone_at = time.monotonic()
    while (answer := _post(stack.webrtc_url + "v1/live?photo=" + photo_id, offer))[0] == 429:
        assert time.monotonic() - gone_at < 15, "the place was not freed"
        time.sleep(0.25)
    freed_s = time.monotonic() - gone_at
    status, _, headers = answer
    assert status == 201, answer
    print(f"place freed {freed_s:.1f} s after the peer was killed")
    request = urllib.request.Request(stack.webrtc_url.rstrip("/") + headers["Location"], method="DELETE")
    assert urllib.request.urlopen(request, timeout=10).status == 204


def test_a_browser_with_its_default_webrtc_settings_connects_on_loopback(stack, photo_id):
    """Without the test flags Chrome offers mDNS names and no loopback candidate (a person's browser
    opening the page `likeness serve` prints): the loopback-bound front still connects."""
    person = Browser(USER_FLAGS)
    try:
        _connect(person, stack, photo_id)
        assert ".local" in person.evaluate("likeness.pc.localDescription.sdp")  # (its addresses hidden)
        _wait(person, "likeness.pc.connectionState === 'connected'", 10)
        person.evaluate("likeness.hangup()")
    finally:
        person.close()


def test_a_photo_uploaded_over_http_is_the_asset_grpc_knows(stack, photo_id):
    """The page's upload (POST /v1/assets) stores as UploadAsset does: the same bytes, the same id."""
    import json

    from tests.platform_stack import PHOTO

    status, body, _ = _post(stack.webrtc_url + "v1/assets?kind=photo", PHOTO.read_bytes(), "image/jpeg")
    assert status == 201 and json.loads(body) == {"asset_id": photo_id, "existing": True}, body
    status, body, _ = _post(stack.webrtc_url + "v1/assets?kind=photo", b"GIF89a not really", "image/gif")
    assert status == 400 and body.count("\n") == 1, body  # (the content is checked as UploadAsset's is)
    status, body, _ = _post(stack.webrtc_url + "v1/assets?kind=photo", b"x=1", "application/x-www-form-urlencoded")
    assert status == 415, body  # (what another site's form could send)
