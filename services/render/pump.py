"""The frame pump: items in on one thread, frames rendered and encoded on another.

What the render service's RenderVideo and the embedded live pipeline share: whoever puts items (a
request reader, an animator fed by live audio) never blocks on the encoder, and an encoder that fails
drains what is still put, so the producer finishes and the failure is reported once, at the end.
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator

import numpy as np

_END = object()


class FramePump:
    """`render(item, index)` makes frame `index` of each item put; `encode(frames)` takes the frames
    as an iterator (it runs on the pump's thread, started at once). `on_frame(count)` is told after
    each frame; `on_done()` once the encoder returned or failed. To stop early, let `render` raise. `maxsize` bounds the items waiting
    (0: unbounded; a bound makes `put` wait for the renderer)."""

    def __init__(self, render: Callable[[object, int], np.ndarray],
                 encode: Callable[[Iterator[np.ndarray]], None], *, maxsize: int = 0, name: str = "encode", on_frame: Callable[[int], None] = lambda count: None,
                 on_done: Callable[[], None] = lambda: None) -> None:
        self._render, self._on_frame, self._on_done = render, on_frame, on_done
        self._items: queue.Queue = queue.Queue(maxsize=maxsize)
        self._over = threading.Event()  # the encoder has taken the end marker
        self.frames = 0
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._encode, args=(encode,), name=name, daemon=True)
        self._thread.start()

    def put(self, item: object) -> None:
        self._items.put(item)

    def end(self) -> None:
        """No more items: the encoder finishes the video."""
        self._items.put(_END)

    def join(self) -> None:
        self._thread.join()

    def _frames(self) -> Iterator[np.ndarray]:
        while (item := self._items.get()) is not _END:
            frame = self._render(item, self.frames)
            yield frame
            self.frames += 1
            self._on_frame(self.frames)
        self._over.set()

    def _encode(self, encode: Callable[[Iterator[np.ndarray]], None]) -> None:
        try:
            encode(self._frames())
        except BaseException as exc:  # (reported by whoever joins)
            self.failure = exc
            while not self._over.is_set() and self._items.get() is not _END:  # drain: `put` never blocks
                pass
        finally:
            self._on_done()
