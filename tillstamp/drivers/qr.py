"""QR decoding for camera frames and photos: zxing-cpp first, OpenCV retries only if needed.

Pass 1 is zxing-cpp on the grey image (QR Model 1/2 only: Micro QR and rMQR are where false
positives come from). Only when it finds nothing do the retries run: zxing-cpp on a 2x
upscale and on an Otsu-binarised copy, then OpenCV's QRCodeDetectorAruco and QRCodeDetector.
Camera frames go through `decode_frame`: one zxing-cpp call without its rotate and invert
passes (rotation only matters for 1D codes), the image inverted on every other frame so
light-on-dark phone screens are still read, and retries only where zxing-cpp saw a QR it
could not read, on that region. That keeps a 720p frame with no code under 5 ms.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import cv2
import numpy as np
import zxingcpp

log = logging.getLogger(__name__)
QR_FORMATS = (zxingcpp.BarcodeFormat.QRCodeModel1, zxingcpp.BarcodeFormat.QRCodeModel2)
_UPSCALE_LIMIT = 1600  # px: above this a 2x copy costs more than it finds


def to_gray(image: np.ndarray) -> np.ndarray:
    """A single-channel uint8 view of a BGR, BGRA or grey image."""
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def _zxing(gray: np.ndarray, fast: bool = False) -> tuple[list[str], list[zxingcpp.Barcode]]:
    found = zxingcpp.read_barcodes(
        gray, formats=QR_FORMATS, text_mode=zxingcpp.TextMode.Plain,  # type: ignore[arg-type]  # stubs want BarcodeFormats
        return_errors=True, try_rotate=not fast, try_invert=not fast)
    return [b.text for b in found if b.valid and b.text], [b for b in found if not b.valid]


def _opencv(detector: cv2.QRCodeDetector | cv2.QRCodeDetectorAruco,
            gray: np.ndarray) -> list[str]:
    try:
        ok, texts, _points, _straight = detector.detectAndDecodeMulti(gray)
    except (cv2.error, UnicodeDecodeError) as e:
        # OpenCV 5 raises on some symbols (ECI, Kanji mode, bad UTF-8) instead of returning "".
        log.debug("OpenCV QR decode failed: %s", e)
        return []
    return [t for t in texts if t] if ok else []


def _upscale(gray: np.ndarray) -> np.ndarray:
    return cv2.resize(gray, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)


def _binarise(gray: np.ndarray) -> np.ndarray:
    return cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)[1]


def _retries(gray: np.ndarray) -> Iterable[Callable[[], list[str]]]:
    small = max(gray.shape) <= _UPSCALE_LIMIT
    if small:
        yield lambda: _zxing(_upscale(gray))[0]
    yield lambda: _zxing(_binarise(gray))[0]
    yield lambda: _opencv(cv2.QRCodeDetectorAruco(), gray)
    if small:
        yield lambda: _opencv(cv2.QRCodeDetectorAruco(), _upscale(gray))
    yield lambda: _opencv(cv2.QRCodeDetector(), gray)


def _region(gray: np.ndarray, code: zxingcpp.Barcode) -> np.ndarray:
    p = code.position
    xs = [p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x]
    ys = [p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y]
    pad = max(max(xs) - min(xs), max(ys) - min(ys)) // 2 + 8
    h, w = gray.shape
    return gray[max(0, min(ys) - pad): min(h, max(ys) + pad),
                max(0, min(xs) - pad): min(w, max(xs) + pad)]


def _unique(texts: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def decode_qr(image: np.ndarray, *, thorough: bool = True) -> list[str]:
    """Texts of the QR codes in a photo; [] when there are none. Never raises on pixels."""
    if image is None or image.size == 0 or min(image.shape[:2]) < 8:
        return []
    gray = to_gray(image)
    texts, unreadable = _zxing(gray)
    if texts:
        return _unique(texts)
    return _retry(gray, [gray] if thorough else [_region(gray, c) for c in unreadable])


def decode_frame(image: np.ndarray, *, inverted: bool = False) -> list[str]:
    """Texts of the QR codes in a camera frame, on the fast path; `inverted` flips it first."""
    if image is None or image.size == 0 or min(image.shape[:2]) < 8:
        return []
    gray = to_gray(image)
    if inverted:
        gray = cv2.bitwise_not(gray)
    texts, unreadable = _zxing(gray, fast=True)
    if texts:
        return _unique(texts)
    return _retry(gray, [_region(gray, c) for c in unreadable])


def _retry(gray: np.ndarray, regions: list[np.ndarray]) -> list[str]:
    for region in regions:
        if region.size == 0:
            continue
        for attempt in _retries(region):
            texts = attempt()
            if texts:
                return _unique(texts)
    return []
