"""`hq predict`: fit the insight models on head office's sale lines as of a date, and store them.

The models (`tillstamp.insight`) see numpy arrays only; this module reads the read model's
`sale_lines` before `as_of` (a date D means D 00:00 in the store's zone, so nothing on or after
D can influence a prediction), scores every member with history, and writes one versioned run
of rows in bounded chunks. Segments, flows and the member 360 read the newest complete run.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ..insight.history import History
from ..insight.predict import Predictions, predict
from .predicted import churn_risk
from .store import HqStore

EPOCH = dt.date(1970, 1, 1)
WRITE_CHUNK = 5000  # prediction rows per transaction

Progress = Callable[[str, int, int], None]  # (stage, done, total)


class PredictError(ValueError):
    """Nothing to predict from, or a bad request (shown as one line, exit 2)."""


def epoch_day(d: dt.date) -> int:
    """Days since 1970-01-01: the read model's `day`."""
    return (d - EPOCH).days


def load_history(store: HqStore, as_of: dt.date) -> History:
    """The members' sale lines before `as_of` as a History (read in bounded chunks)."""
    member: list[str] = []
    receipt: list[str] = []
    day: list[int] = []
    hour: list[int] = []
    sku: list[str] = []
    category: list[str | None] = []
    amount: list[int] = []
    for rows in store.history_columns(epoch_day(as_of)):
        m, r, d, h, s, c, a = zip(*rows, strict=True)
        member.extend(m)
        receipt.extend(r)
        day.extend(d)
        hour.extend(h)
        sku.extend(s)
        category.extend(c)
        amount.extend(a)
    return History.from_columns(member, receipt, np.array(day, dtype="datetime64[D]"),
                                np.array(hour, dtype=np.int8), sku, category, np.array(amount, dtype=np.int64))


def _usual_gap(history: History) -> dict[str, float]:
    """Each member's median days between visits (distinct store-local days), where there are two."""
    if not len(history):
        return {}
    pairs = np.unique(np.stack([history.member.astype(np.int64),
                                history.occasion.astype(np.int64)]), axis=1)
    out: dict[str, float] = {}
    members, starts = np.unique(pairs[0], return_index=True)
    bounds = [*starts[1:], pairs.shape[1]]
    for m, lo, hi in zip(members, starts, bounds, strict=True):
        if hi - lo >= 2:
            out[history.members[m]] = float(np.median(np.diff(pairs[1, lo:hi])))
    return out


def prediction_rows(preds: Predictions, run: int, gaps: dict[str, float]) -> Iterator[tuple[Any, ...]]:
    """One stored row per member (PREDICTION_COLS order)."""
    for p in preds:
        reorder = [{"category": c, "due": d.isoformat()} for c, d in p.reorder]
        yield (p.member, run, p.p_alive, p.p_visit_14d, p.expected_visits_30d, p.value_12m,
               # no date when the model expects no further visit at all
               p.next_visit.isoformat() if p.next_visit else None,
               epoch_day(p.next_visit) if p.next_visit else None, p.best_hour, p.best_weekday,
               churn_risk(p.p_visit_14d), gaps.get(p.member),
               json.dumps(p.skus, ensure_ascii=False), json.dumps(p.categories, ensure_ascii=False),
               json.dumps(reorder, ensure_ascii=False),
               min((epoch_day(d) for _, d in p.reorder), default=None))


def run_predictions(store: HqStore, as_of: dt.date, *, now: dt.datetime,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Fit on history before `as_of`, score every member, store the run; its summary."""
    history = load_history(store, as_of)
    if progress:
        progress("read", len(history), len(history))
    if not len(history):
        raise PredictError(f"no member has a sale before {as_of.isoformat()}: nothing to fit on")
    # The fits are many small vector operations: BLAS threads only wait for each other, and on
    # a busy 2-core server they made a run about ten times slower (docs/INSIGHT.md).
    # Fits probe the edges of their parameter space (overflow, 0/0) and the models replace what
    # is not finite; those floating-point warnings are not for the person running the command.
    with threadpool_limits(limits=1, user_api="blas"), np.errstate(all="ignore"), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        preds = predict(history, as_of)
    gaps = _usual_gap(history)
    run = store.start_run(as_of, epoch_day(as_of), preds.model_version, now,
                          preds.model_params)
    chunk: list[tuple[Any, ...]] = []
    done = 0
    for row in prediction_rows(preds, run, gaps):
        chunk.append(row)
        if len(chunk) == WRITE_CHUNK:
            store.put_predictions(chunk)
            done += len(chunk)
            chunk = []
            if progress:
                progress("write", done, len(preds))
    if chunk:
        store.put_predictions(chunk)
        done += len(chunk)
    store.finish_run(run, done)
    if progress:
        progress("write", done, len(preds))
    return {"run": run, "members": done, "as_of": as_of.isoformat(), "model_version": preds.model_version,
            "fitted_at": now.isoformat(), "models": preds.model_params}


def export(store: HqStore, page: int = 5000) -> Iterator[dict[str, Any]]:
    """The newest complete run, one dict per member, in member order."""
    latest = store.latest_run()
    if latest is None:
        raise PredictError("no predictions yet: run `tillstamp hq predict` first")
    after = ""
    while rows := store.prediction_page(latest["run"], after, page):
        for r in rows:
            yield export_row(r)
        after = rows[-1]["member"]


EXPORT_COLS = ("member", "external_id", "p_alive", "p_visit_14d", "expected_visits_30d", "value_12m",
               "next_visit", "best_hour", "best_weekday", "churn_risk", "skus", "categories", "reorder")


def export_row(r: dict[str, Any]) -> dict[str, Any]:
    """A stored prediction as the export shows it."""
    return {k: r[k] for k in EXPORT_COLS}
