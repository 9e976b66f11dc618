"""Printer benchmark: receipt bytes with a native QR vs an image QR, and time at 9600 baud.

Run from the repository root: `python benchmarks/bench_printer.py`. Prints a markdown table.
"""

from __future__ import annotations

import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tillstamp.drivers.escpos_decode import decode
from tillstamp.drivers.receipt import (
    ExpiringStamps,
    MissionProgress,
    Receipt,
    SaleLine,
    render_receipt,
)

RECEIPT = Receipt(
    store_name="Café Señor", store_lines=("Jl. Kemang Raya 8", "Jakarta Selatan"),
    receipt_no="A-0042", at=datetime(2025, 3, 14, 9, 30, tzinfo=timezone(timedelta(hours=7))),
    lines=(SaleLine("Kopi Susu Gula Aren", 2, 12500, 25000), SaleLine("Roti Bakar", 1, 18000, 18000)),
    total=43000, member_name="José Santoso", stamps_earned=3, balance=5, card_filled=5,
    card_size=10, tier="Silver", next_tier="Gold", to_next_tier=4,
    missions=(MissionProgress("Beli 5 kopi", 3, 5),), expiring=(ExpiringStamps(2, date(2025, 4, 1)),),
    qr_payload="https://c.tillstamp.id/TS1C7QXZ2KJD4M6P8R9T1V3W5Y7A2B4C6D8E0FGHJ",
    qr_caption="Scan untuk klaim 3 stempel",
)
BITS_PER_BYTE_8N1 = 10  # start bit + 8 data bits + stop bit


def main() -> None:
    print("| paper | QR | bytes | seconds at 9600 baud (8N1) | render ms | decode ms |")
    print("|---|---|---|---|---|---|")
    for width, paper in ((32, "58 mm"), (48, "80 mm")):
        for native in (True, False):
            start = time.perf_counter()
            data = render_receipt(RECEIPT, width=width, native_qr=native)
            render_ms = (time.perf_counter() - start) * 1000
            start = time.perf_counter()
            decode(data)
            decode_ms = (time.perf_counter() - start) * 1000
            seconds = len(data) * BITS_PER_BYTE_8N1 / 9600
            print(f"| {paper} | {'native GS ( k' if native else 'image GS v 0'} | {len(data)} "
                  f"| {seconds:.2f} | {render_ms:.1f} | {decode_ms:.1f} |")


if __name__ == "__main__":
    main()
