"""How HQ's JSON APIs answer a refusal: one `ErrorBody` shape, one table per API.

The sync API (app.py) and the staff API (crm_api.py) each map their exceptions to a status and
an error code; keeping the mapping a table makes every refusal of an API readable in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from ..sync import protocol as p


def error_response(status: int, code: str, message: str, expected: int | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """A refusal in the `ErrorBody` shape every HQ API answers with."""
    return JSONResponse(p.ErrorBody(error=code, message=message, expected=expected).model_dump(),
                        status_code=status, headers=headers)


def _handler(status: int, code: str, headers: dict[str, str] | None) -> Any:
    async def handle(_: Request, e: Exception) -> JSONResponse:
        expected = getattr(e, "expected", None)  # a gap says which sequence HQ expects
        return error_response(status, code, str(e),
                              expected=expected if isinstance(expected, int) else None, headers=headers)
    return handle


def answer_errors(app: FastAPI, table: Mapping[type[Exception], tuple[int, str]],
                  headers: Mapping[type[Exception], dict[str, str]] | None = None) -> None:
    """Answer each exception type in `table` with its (status, code) and the exception's text."""
    for exc, (status, code) in table.items():
        app.add_exception_handler(exc, _handler(status, code, (headers or {}).get(exc)))
