"""A real headless Chromium driven over the DevTools protocol (`websockets`): the WebRTC page's tests
and benchmark (tests/test_platform_webrtc.py, benchmarks/live.py).

Flags from shared/notes/webrtc-browser-check.md: --headless=new and --no-sandbox (root); autoplay with
audio without a click; fake media UI so Chrome gathers every interface, loopback included
(--allow-loopback-in-peer-connection), with raw addresses instead of mDNS names. No X server, sound
card or chromedriver is needed.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from services.devtools.ports import free_ports

FLAGS = ["--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
         "--use-fake-ui-for-media-stream", "--disable-features=WebRtcHideLocalIpsWithMdns",
         "--allow-loopback-in-peer-connection", "--disable-background-networking", "--no-first-run"]


# A person's browser: no flags that change WebRTC (it hides its addresses behind mDNS names and
# gathers no loopback candidates); the autoplay flag stands for the click a person gives the page.
USER_FLAGS = ["--headless=new", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
              "--disable-background-networking", "--no-first-run"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """One Chromium process and its first page; `evaluate` runs JavaScript there (promises awaited)."""

    def __init__(self, flags: list[str] = FLAGS) -> None:
        from websockets.sync.client import connect

        self.profile = tempfile.mkdtemp(prefix="likeness-chromium-")
        port = free_ports(1)[0]
        self.proc = subprocess.Popen([chromium(), *flags, f"--remote-debugging-port={port}",
                                      f"--user-data-dir={self.profile}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2))
                page = next(t for t in targets if t["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium's DevTools endpoint did not come up")
                time.sleep(0.1)
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10).__enter__()
        self._ids = itertools.count(1)

    def call(self, method: str, timeout_s: float = 30.0, **params) -> dict:
        message_id = next(self._ids)
        self.ws.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def evaluate(self, expression: str, timeout_s: float = 30.0):
        """The value of `expression` (JSON-able), a promise's once it settles; a thrown error raises."""
        result = self.call("Runtime.evaluate", timeout_s, expression=expression, awaitPromise=True,
                           returnByValue=True, timeout=int(timeout_s * 1000))
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise RuntimeError(details.get("exception", {}).get("description") or details.get("text"))
        return result["result"].get("value")

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 15
        while self.evaluate("document.readyState") != "complete" or self.evaluate("location.href") != url:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load")
            time.sleep(0.05)

    def kill(self) -> None:
        """Gone at once, as a crashed browser or a lost network: nothing is said to the peers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.close()

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        except Exception:  # noqa: BLE001 - a killed browser's socket
            pass
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGTERM)  # (its zygotes and helpers share the group)
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait()
            shutil.rmtree(self.profile, ignore_errors=True)


# Samples, every 40 ms, the audio's RMS (an AnalyserNode on the remote track, which also plays in the
# muted <video>: WebAudio reads silence otherwise) and how much the mouth region changed since the last
# sample (canvas). The mouth region is where tests/test_platform_live.py looks (grace_hopper.jpg), as
# fractions of the frame. window.firstFrameAt: when the first frame after this was presented.
PROBE = """(() => {
  const video = document.getElementById("video");
  video.muted = true;
  const context = new AudioContext();
  const analyser = context.createAnalyser();
  analyser.fftSize = 1024;
  context.createMediaStreamSource(video.srcObject).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  const canvas = document.createElement("canvas");
  const g = canvas.getContext("2d", { willReadFrequently: true });
  let previous = null;
  window.probe = [];
  window.firstFrameAt = null;  // the first frame presented from now on
  video.requestVideoFrameCallback(() => { window.firstFrameAt = performance.now(); });
  setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    let motion = null;
    if (video.videoWidth) {
      const w = video.videoWidth, h = video.videoHeight;
      const x = Math.round(w * 100 / 256), y = Math.round(h * 125 / 256);
      const rw = Math.round(w * 56 / 256), rh = Math.round(h * 45 / 256);
      canvas.width = rw; canvas.height = rh;  // (the region alone: the browser shares 2 cores with the platform)
      g.drawImage(video, x, y, rw, rh, 0, 0, rw, rh);
      const data = g.getImageData(0, 0, rw, rh).data;
      if (previous) {
        let d = 0;
        for (let i = 0; i < data.length; i += 4) d += Math.abs(data[i] - previous[i]) + Math.abs(data[i + 1] - previous[i + 1]);
        motion = d / (data.length / 2);
      }
      previous = data;
    }
    window.probe.push({ t: performance.now(), rms, motion });
  }, 40);
  return context.state;
})()"""
