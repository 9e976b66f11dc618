"""Phone-like photos of QR codes, made by the tests so a fresh clone still tests the pipeline.

A clean code from `qrcode`, pasted on a textured, unevenly lit background, then what a phone
does to it: a perspective warp (held at an angle), defocus blur, sensor noise and JPEG
compression. Seeded, so a photo is the same on every run and an assertion on a count holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import qrcode
from qrcode.constants import ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q


@dataclass(frozen=True)
class Photo:
    """One made photo: where it was written and the text its code holds (None: no code)."""

    path: Path
    text: str | None


_LEVELS = (ERROR_CORRECT_L, ERROR_CORRECT_M, ERROR_CORRECT_Q)


def _code(text: str, rng: np.random.Generator) -> np.ndarray:
    code = qrcode.QRCode(error_correction=_LEVELS[rng.integers(len(_LEVELS))], box_size=1,
                         border=4)
    code.add_data(text)
    code.make(fit=True)
    return np.array(code.make_image().get_image().convert("L"), dtype=np.uint8)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    # A table top: low-frequency texture and a light falling off toward one corner.
    texture = cv2.resize(rng.integers(90, 200, (h // 40 + 2, w // 40 + 2)).astype(np.uint8),
                         (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w]
    light = 1.0 - 0.35 * (xx / w * rng.random() + yy / h * rng.random())
    return np.clip(texture * light, 0, 255).astype(np.uint8)


def make_photo(text: str | None, seed: int, *, size: tuple[int, int] = (800, 600),
               tilt: float = 0.15, blur: int = 5, noise: float = 10.0,
               quality: int = 55) -> bytes:
    """A JPEG photo of `text` as a QR code (or of no code), degraded as a phone camera does."""
    rng = np.random.default_rng(seed)
    w, h = size
    frame = _background(rng, w, h)
    cv2.putText(frame, "Kopi Senja", (30, h - 40), cv2.FONT_HERSHEY_SIMPLEX, 1.4, 40, 3)
    if text is not None:
        code = _code(text, rng)
        module = int(rng.integers(4, 7))  # pixels per module as the camera sees it
        code = cv2.resize(code, None, fx=module, fy=module, interpolation=cv2.INTER_NEAREST)
        code = (code.astype(np.float32) * 0.85 + 25).astype(np.uint8)  # ink and paper, not 0/255
        ch, cw = code.shape
        x = int(rng.integers(20, max(21, w - cw - 20)))
        y = int(rng.integers(20, max(21, h - ch - 20)))
        # Held at an angle: the card's corners move, the table behind it does not.
        d = tilt * cw
        jitter = rng.uniform(-0.5, 0.5, (4, 2)) * d
        src = np.float32([[0, 0], [cw, 0], [cw, ch], [0, ch]])
        dst = np.float32(src + np.float32([[x + d, y], [x - d, y + d / 2], [x, y], [x, y - d]])
                         + jitter)
        warp = cv2.getPerspectiveTransform(src, dst)
        card = cv2.warpPerspective(code, warp, (w, h), flags=cv2.INTER_LINEAR)
        mask = cv2.warpPerspective(np.full_like(code, 255), warp, (w, h)) > 127
        frame[mask] = card[mask]
    if blur:
        frame = cv2.GaussianBlur(frame, (blur, blur), 0)
    if noise:
        frame = np.clip(frame + rng.normal(0, noise, frame.shape), 0, 255).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return jpeg.tobytes()


PAYLOADS = (
    "TS1MAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQCAIBAEAQ",
    "HTTPS://KLAIM.KOPISENJA.ID/TS1CAEBAGBAFAYDQQCIKBMGA2DQPCAIREEYUCULBOGAZDINRYHAYTS",
    "https://kopisenja.id/kartu?m=01M83FJHMZ7GZY5AG8T0QJJND6",
    "081234567890",
    "Es Kopi Susu x2 — Rp 50.000",
    "TS1MEMBERTWO",
)


def write_photos(folder: Path, count: int, *, no_code_every: int = 5,
                 **degrade: float) -> list[Photo]:
    """Write `count` seeded JPEG photos into `folder`; every `no_code_every`-th has no code."""
    photos = []
    for i in range(count):
        text = None if i % no_code_every == no_code_every - 1 else PAYLOADS[i % len(PAYLOADS)]
        path = folder / f"photo-{i:03d}.jpg"
        path.write_bytes(make_photo(text, seed=i, **degrade))  # type: ignore[arg-type]
        photos.append(Photo(path, text))
    return photos
