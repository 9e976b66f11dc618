"""QR benchmark: tillstamp's pipeline vs plain OpenCV vs plain zxing-cpp, in one run.

Run from the repository root: `python benchmarks/bench_qr.py`. Prints a markdown table.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import qrcode
import zxingcpp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tillstamp.drivers.camera import read_image
from tillstamp.drivers.qr import QR_FORMATS, decode_frame, decode_qr

# The same corpus the tests read: TILLSTAMP_TEST_DATA, else ../shared/data beside the checkout.
DATA = Path(os.environ.get("TILLSTAMP_TEST_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "data") / "qr"


def norm(text: str) -> str:
    """Compare texts as the data README says: CRLF as LF, outer white space stripped."""
    return text.replace("\r\n", "\n").strip()


def expected(path: Path) -> str:
    raw = path.with_suffix(".txt").read_bytes()
    try:
        return norm(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return norm(raw.decode("latin-1"))


def plain_opencv(image: np.ndarray) -> list[str]:
    try:
        text, _points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    except (cv2.error, UnicodeDecodeError):
        return []
    return [text] if text else []


def plain_zxing(image: np.ndarray) -> list[str]:
    return [b.text for b in zxingcpp.read_barcodes(image, formats=QR_FORMATS)]


DECODERS: dict[str, Callable[[np.ndarray], list[str]]] = {
    "tillstamp (decode_qr)": decode_qr,
    "tillstamp decode_frame": decode_frame,
    "cv2.QRCodeDetector": plain_opencv,
    "zxing-cpp": plain_zxing,
}


def timed(fn: Callable[[np.ndarray], list[str]], image: np.ndarray) -> tuple[list[str], float]:
    start = time.perf_counter()
    out = fn(image)
    return out, (time.perf_counter() - start) * 1000


def synthetic_frames() -> tuple[np.ndarray, np.ndarray]:
    """A 1280x720 noisy scene with a QR pasted in, and the same scene without it."""
    rng = np.random.default_rng(1)
    base = cv2.GaussianBlur((rng.random((720, 1280)) * 60 + 120).astype(np.uint8), (9, 9), 0)
    cv2.rectangle(base, (100, 80), (420, 300), 60, -1)
    cv2.putText(base, "KASIR 2", (800, 650), cv2.FONT_HERSHEY_SIMPLEX, 2, 30, 4)
    code = qrcode.QRCode(box_size=5, border=4)
    code.add_data("TS1ABCDEFGHJKMNPQRSTVWXYZ234567ABCDEFGH")
    code.make(fit=True)
    qr = np.array(code.make_image().get_image().convert("L"), dtype=np.uint8)
    with_qr = base.copy()
    with_qr[200 : 200 + qr.shape[0], 600 : 600 + qr.shape[1]] = qr
    noisy = [np.clip(f + rng.normal(0, 8, f.shape), 0, 255).astype(np.uint8)
             for f in (with_qr, base)]
    return noisy[0], noisy[1]


def main() -> None:
    photos = sorted(p for p in (DATA / "zxing").glob("qrcode-*/*")
                    if p.suffix != ".txt" and p.is_file())
    fakes = sorted(p for p in (DATA / "zxing-cpp/falsepositives-1").iterdir()
                   if p.suffix.lower() in {".png", ".jpg", ".webp", ".gif"})
    images = [(read_image(p), expected(p)) for p in photos]
    fake_images = [read_image(p) for p in fakes]
    with_qr, without = synthetic_frames()
    print(f"# QR benchmark ({dt.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"OpenCV {cv2.__version__}, zxing-cpp {importlib.metadata.version('zxing-cpp')})\n")
    print("| decoder | photos read | share | false positives | ms/photo (mean) "
          "| ms/720p frame with QR | ms/720p frame, no QR |")
    print("|---|---|---|---|---|---|---|")
    for name, fn in DECODERS.items():
        ok, times = 0, []
        for image, want in images:
            texts, ms = timed(fn, image)
            times.append(ms)
            ok += want in [norm(t) for t in texts]
        false = sum(bool(fn(im)) for im in fake_images)
        frame_ms = statistics.median(timed(fn, with_qr)[1] for _ in range(15))
        empty_ms = statistics.median(timed(fn, without)[1] for _ in range(15))
        found = fn(with_qr)
        print(f"| {name} | {ok}/{len(images)} | {ok / len(images):.1%} | {false}/{len(fakes)} "
              f"| {statistics.mean(times):.2f} | {frame_ms:.2f}{'' if found else ' (missed)'} "
              f"| {empty_ms:.2f} |")


if __name__ == "__main__":
    main()
