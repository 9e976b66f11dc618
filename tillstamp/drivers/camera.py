"""Camera QR reader: frames from OpenCV, decoded by `qr.decode_qr`, debounced into scans.

URL grammar:
    camera://N[?width=1280&height=720]   live camera N through cv2.VideoCapture
    video:///path/clip.mp4               replay a recorded clip, then stop
    images:///path/dir                   stills in name order (png, jpg, webp, gif, bmp), then stop

A camera that stops giving frames is "lost" and reopened with backoff; a replay that ends
stops the reader. The same payload seen again within the debounce window (2 s) is one scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from tillstamp.drivers.backoff import Backoff
from tillstamp.drivers.errors import DeviceConfigError, DeviceUnavailable
from tillstamp.drivers.events import ScanCallback, StateCallback
from tillstamp.drivers.lifecycle import Device
from tillstamp.drivers.qr import decode_frame, decode_qr
from tillstamp.drivers.reader import Debouncer, DeviceReader, SourceExhausted
from tillstamp.drivers.urls import DeviceURL, lookup

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def read_image(path: str | Path) -> np.ndarray:
    """Load a still as BGR; OpenCV first, Pillow for what it cannot read (GIF, tiny WebP)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is not None:
        return image
    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))[:, :, ::-1].copy()
    except (OSError, UnidentifiedImageError) as e:
        raise DeviceUnavailable(f"cannot read image {path}: {e}") from e


class _Source(Device):
    """A source of frames."""


class CaptureSource(_Source):
    """A live camera or a video file read with cv2.VideoCapture."""

    def __init__(self, url: str, target: int | str, *, live: bool,
                 size: tuple[int, int] | None = None) -> None:
        self.url = url
        self.live = live
        self._cap = cv2.VideoCapture(target)
        if not self._cap.isOpened():
            self._cap.release()
            if live:
                raise DeviceUnavailable(f"camera {target} is not available")
            raise DeviceConfigError(f"cannot open video {target!r}")
        if size:
            self._cap.set(cv2.CAP_PROP_FRAME_WIDTH, size[0])
            self._cap.set(cv2.CAP_PROP_FRAME_HEIGHT, size[1])

    def read(self) -> np.ndarray:
        """The next frame; DeviceUnavailable when a camera stops, SourceExhausted at a clip's end."""
        ok, frame = self._cap.read()
        if ok and frame is not None:
            return frame
        if self.live:
            raise DeviceUnavailable(f"{self.url} stopped giving frames")
        raise SourceExhausted(self.url)

    def close(self) -> None:
        """Release the capture."""
        self._cap.release()


class StillsSource(_Source):
    """Image files in a directory, in name order."""

    def __init__(self, url: str, directory: Path) -> None:
        self.url = url
        if not directory.is_dir():
            raise DeviceConfigError(f"{url!r}: {directory} is not a directory")
        self._files = sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        self.current: Path | None = None

    def read(self) -> np.ndarray:
        """The next still; SourceExhausted after the last."""
        while self._files:
            self.current = self._files.pop(0)
            try:
                return read_image(self.current)
            except DeviceUnavailable:
                continue  # an unreadable file is skipped, the folder goes on
        raise SourceExhausted(self.url)


FrameSource = CaptureSource | StillsSource


def _open_camera(u: DeviceURL) -> FrameSource:
    index = u.raw.split("://", 1)[1].split("?", 1)[0].strip("/") or "0"
    if not index.isdigit():
        raise DeviceConfigError(f"{u.raw!r}: expected camera://N with N a number")
    size = None
    if "width" in u.options or "height" in u.options:
        size = (u.int_option("width", 1280), u.int_option("height", 720))
    return CaptureSource(u.raw, int(index), live=True, size=size)


def _open_video(u: DeviceURL) -> FrameSource:
    if not u.path or not Path(u.path).is_file():
        raise DeviceConfigError(f"{u.raw!r}: no such video file {u.path!r}")
    return CaptureSource(u.raw, u.path, live=False)


CAMERA_SCHEMES: dict[str, Callable[[DeviceURL], FrameSource]] = {
    "camera": _open_camera,
    "video": _open_video,
    "images": lambda u: StillsSource(u.raw, Path(u.path)),
}


def open_camera(url: str) -> FrameSource:
    """Open a frame source from its URL; `.read()` gives BGR frames."""
    return lookup(CAMERA_SCHEMES, url, "camera")


class _CameraSession:
    def __init__(self, source: FrameSource, thorough: bool) -> None:
        self.source = source
        self.thorough = thorough
        self.frames = 0

    def poll(self) -> list[str]:
        frame = self.source.read()
        self.frames += 1
        if self.thorough:
            return decode_qr(frame)
        return decode_frame(frame, inverted=self.frames % 2 == 0)

    def close(self) -> None:
        self.source.close()


def camera_reader(url: str, on_scan: ScanCallback, *, on_state: StateCallback | None = None,
                  debounce: float = 2.0, clock: Callable[[], float] = time.monotonic,
                  thorough: bool | None = None, backoff: Backoff | None = None,
                  wait: Callable[[float], object] | None = None) -> DeviceReader:
    """A reader thread (not yet started) turning frames into debounced scan events."""
    # Stills are photos: give each the full retry ladder. Video frames get the cheap path.
    deep = url.startswith("images:") if thorough is None else thorough
    return DeviceReader(url, lambda: _CameraSession(open_camera(url), deep), on_scan,
                        on_state=on_state, debouncer=Debouncer(debounce, clock),
                        backoff=backoff, wait=wait)
