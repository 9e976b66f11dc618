"""The SQL of stored predictions (`prediction_runs`, `predictions`), shared by both HQ backends.

A run is one `hq predict`: models fitted on the sale lines before its `as_of`, one row per
member scored. Rows are written in bounded chunks, each its own transaction, and the run is
marked complete only after its last chunk, so readers (segments, flows, the member 360, the
export) only ever see whole runs: the newest complete one. What the numbers mean is decided
in `predict.py` and `tillstamp.insight`; here are only the statements.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from typing import Any

# Keyed by member first, like every CRM table, so a member-distributed database can hold it.
_PREDICTION_COLS = (
    "member", "run", "p_alive", "p_visit_14d", "expected_visits_30d", "value_12m", "next_visit",
    "next_visit_day", "best_hour", "best_weekday", "churn_risk", "usual_gap_days", "skus",
    "categories", "reorder", "reorder_day",
)
PREDICTION_COLS = _PREDICTION_COLS


def _schema(serial: str, real: str, strict: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS prediction_runs (run {serial}, as_of TEXT NOT NULL,
            as_of_day INTEGER NOT NULL, model_version TEXT NOT NULL, fitted_at TEXT NOT NULL,
            members INTEGER NOT NULL DEFAULT 0, params TEXT NOT NULL,
            complete INTEGER NOT NULL DEFAULT 0){strict}""",
        f"""CREATE TABLE IF NOT EXISTS predictions (member TEXT NOT NULL, run INTEGER NOT NULL,
            p_alive {real} NOT NULL, p_visit_14d {real} NOT NULL, expected_visits_30d {real} NOT NULL,
            value_12m INTEGER NOT NULL, next_visit TEXT, next_visit_day INTEGER,
            best_hour INTEGER NOT NULL, best_weekday INTEGER NOT NULL, churn_risk TEXT NOT NULL,
            usual_gap_days {real}, skus TEXT NOT NULL, categories TEXT NOT NULL,
            reorder TEXT NOT NULL, reorder_day INTEGER,
            PRIMARY KEY (member, run)){strict}""",
        "CREATE INDEX IF NOT EXISTS predictions_run ON predictions(run, member)",
    )


SQLITE_SCHEMA = _schema("INTEGER PRIMARY KEY AUTOINCREMENT", "REAL", " STRICT")
PG_SCHEMA = _schema("BIGSERIAL PRIMARY KEY", "DOUBLE PRECISION", "")

HISTORY_FETCH = 50_000  # sale lines per fetch while reading history: memory stays bounded


class PredictionStore:
    """Stored predictions; mixed into `SqlHqStore` (which supplies `_x`, `_many`, `_tx`)."""

    _x: Callable[..., Any]
    _many: Callable[..., None]
    _tx: Callable[..., Any]

    def history_columns(self, before_day: int) -> Iterator[list[tuple[Any, ...]]]:
        """Members' sale lines before a store-local day, in chunks of rows
        (member, sale, day, local_hour, sku, category, amount); guests, voided sales
        and erased members are left out."""
        with self._tx(write=False) as c:
            yield from self._stream(c, """SELECT l.member, l.sale, l.day, l.local_hour, l.sku, l.category, l.amount
                FROM sale_lines l WHERE l.member IS NOT NULL AND l.voided = 0 AND l.day < ?
                AND NOT EXISTS (SELECT 1 FROM crm_members m WHERE m.member = l.member
                                AND (m.erased = 1 OR m.merged_into IS NOT NULL))""", (before_day,))

    def _stream(self, c: Any, sql: str, params: Sequence[Any]) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of a query in chunks of HISTORY_FETCH (a backend may stream them from the server)."""
        cur = self._x(c, sql, params)
        while rows := cur.fetchmany(HISTORY_FETCH):
            yield rows

    def start_run(self, as_of: dt.date, as_of_day: int, model_version: str, fitted_at: dt.datetime,
                  params: dict[str, Any]) -> int:
        """Open a prediction run (not yet visible to readers) and return its id."""
        with self._tx() as c:
            row = self._x(c, """INSERT INTO prediction_runs(as_of, as_of_day, model_version, fitted_at, params)
                VALUES (?, ?, ?, ?, ?) RETURNING run""",
                          (as_of.isoformat(), as_of_day, model_version, fitted_at.isoformat(),
                           json.dumps(params, sort_keys=True))).fetchone()
            return int(row[0])

    def put_predictions(self, rows: Sequence[Sequence[Any]]) -> None:
        """Write one chunk of prediction rows (PREDICTION_COLS order) in its own transaction."""
        cols = ", ".join(PREDICTION_COLS)
        marks = ", ".join("?" * len(PREDICTION_COLS))
        with self._tx() as c:
            self._many(c, f"INSERT INTO predictions({cols}) VALUES ({marks})", rows)

    def finish_run(self, run: int, members: int) -> None:
        """Make a run visible: readers now see it as the newest complete run."""
        with self._tx() as c:
            self._x(c, "UPDATE prediction_runs SET complete = 1, members = ? WHERE run = ?", (members, run))

    def latest_run(self) -> dict[str, Any] | None:
        """The newest complete run's id, as-of, model version, fit time and parameters."""
        with self._tx(write=False) as c:
            row = self._x(c, """SELECT run, as_of, as_of_day, model_version, fitted_at, members, params
                FROM prediction_runs WHERE complete = 1 ORDER BY run DESC LIMIT 1""").fetchone()
        if row is None:
            return None
        return {"run": int(row[0]), "as_of": row[1], "as_of_day": int(row[2]), "model_version": row[3],
                "fitted_at": row[4], "members": int(row[5]), "params": json.loads(row[6])}

    def prediction_page(self, run: int, after: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` predictions of a run for members after `after`, with their external id."""
        cols = ", ".join(f"p.{c}" for c in PREDICTION_COLS)
        with self._tx(write=False) as c:
            rows = self._x(c, f"""SELECT {cols}, m.external_id FROM predictions p
                LEFT JOIN crm_members m ON m.member = p.member
                WHERE p.run = ? AND p.member > ? ORDER BY p.member LIMIT ?""", (run, after, limit)).fetchall()
        return [_row(r) for r in rows]

    def member_prediction(self, member: str) -> dict[str, Any] | None:
        """A member's predictions from the newest complete run, or None."""
        cols = ", ".join(f"p.{c}" for c in PREDICTION_COLS)
        with self._tx(write=False) as c:
            row = self._x(c, f"""SELECT {cols}, m.external_id FROM predictions p
                LEFT JOIN crm_members m ON m.member = p.member
                WHERE p.member = ? AND p.run = (SELECT max(run) FROM prediction_runs WHERE complete = 1)""",
                          (member,)).fetchone()
        return _row(row) if row else None


def _row(r: Sequence[Any]) -> dict[str, Any]:
    d = dict(zip((*PREDICTION_COLS, "external_id"), r, strict=True))
    for key in ("skus", "categories", "reorder"):
        d[key] = json.loads(d[key])
    return d
