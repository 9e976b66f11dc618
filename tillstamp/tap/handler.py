"""From the bytes of one printed receipt to a recorded sale and the block to print into it.

The Service is not thread-safe, and the tap serves several POS connections at once, so every
`record` call goes through one worker thread here (in the agent, `record` itself hands the
call to the runtime's writer). A call that takes longer than `record_timeout` is not waited
for: the receipt prints without its block rather than keep the POS waiting (the sale may
still be recorded; a reprint then shows its claim QR).
"""

from __future__ import annotations

import concurrent.futures
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from tillstamp.drivers.escpos_decode import decode
from tillstamp.tap.block import render_block
from tillstamp.tap.extract import ParsedReceipt, extract_any
from tillstamp.tap.template import Template

log = logging.getLogger("tillstamp.tap")

Record = Callable[[dict[str, Any]], dict[str, Any]]
"""Records a sale dict exactly once and returns `SaleResult.to_dict()`; raises when refused."""


class RecordError(RuntimeError):
    """Recording the sale failed or took too long; the receipt prints without a block."""


@dataclass(frozen=True)
class Outcome:
    """What handling one receipt did."""

    parsed: ParsedReceipt
    result: dict[str, Any]
    block: bytes
    member: str | None = None


class ReceiptHandler:
    """Reads receipts with templates, records them, renders the loyalty block."""

    def __init__(self, templates: Sequence[Template], record: Record, *,
                 current_member: Callable[[], str | None] = lambda: None,
                 member_used: Callable[[str], None] | None = None,
                 language: str = "id", width: int = 48, record_timeout: float = 3.0,
                 zone: ZoneInfo | None = None) -> None:
        self.templates = tuple(templates)
        self.record = record
        self.current_member = current_member
        self.member_used = member_used
        self.language = language
        self.width = width
        self.record_timeout = record_timeout
        self.zone = zone
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        """Start the worker that serialises `record` calls."""
        if self._worker is None:
            self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tap-record")

    def stop(self) -> None:
        """Stop the worker (queued calls finish first)."""
        if self._worker is not None:
            self._worker.shutdown(wait=True)
            self._worker = None

    def read(self, data: bytes) -> ParsedReceipt:
        """Decode and read a receipt; `extract.NoMatch` when no template applies."""
        return extract_any(decode(data).text, self.templates, self.zone)

    def handle(self, lines: Sequence[str], *, restore: bytes = b"", new_line: bool = False) -> Outcome:
        """Read decoded lines, record, render; NoMatch or RecordError when there is no block."""
        parsed = extract_any(lines, self.templates, self.zone)
        member = self.current_member()
        result = self._record(parsed.sale_dict(member))
        if member and result.get("member") and self.member_used is not None:
            self.member_used(member)  # the next customer starts clean
        block = render_block(result, language=self.language, width=self.width,
                             restore=restore, new_line=new_line)
        return Outcome(parsed, result, block, result.get("member"))

    def _record(self, sale: dict[str, Any]) -> dict[str, Any]:
        self.start()
        assert self._worker is not None
        fut = self._worker.submit(self.record, sale)
        try:
            return fut.result(timeout=self.record_timeout)
        except concurrent.futures.TimeoutError:
            raise RecordError(f"recording {sale['receipt']} took over {self.record_timeout}s") from None
        except Exception as e:
            if sale.get("member"):
                # A member the till does not know (or a stale scan) must not cost the customer
                # the sale's stamps: record it without the member, which prints a claim QR.
                log.warning("sale %s with member refused (%s); recording without", sale["receipt"], e)
                return self._record({k: v for k, v in sale.items() if k != "member"})
            raise RecordError(f"recording {sale['receipt']} failed: {e}") from e
