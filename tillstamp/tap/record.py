"""The seam between the tap and the till's Service: `record(sale_dict) -> result dict`.

The tap never holds a Service itself. `tillstamp tap run` passes `service_record(service)`,
which the tap's single worker thread calls one at a time; the agent passes a callable that
hands the same function to its writer thread (`lambda d: rt.writer.call(rec, d)`).
"Who was scanned at this till just now" is the runtime's `LastScan` (its `peek` and
`take`), passed in as callables, so the agent has one memory of the last scan.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Protocol

from tillstamp.loyalty.sale import Sale, parse_sale
from tillstamp.tap.handler import Record


class _Result(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class SaleService(Protocol):
    """What the tap needs of `agent.service.Service`."""

    def now(self) -> dt.datetime: ...
    def record_sale(self, sale: Sale) -> _Result: ...


def service_record(service: SaleService) -> Record:
    """A `record` callable over a Service: validate, record exactly once, return the result."""

    def record(sale: dict[str, Any]) -> dict[str, Any]:
        return service.record_sale(parse_sale(sale, now=service.now())).to_dict()

    return record
