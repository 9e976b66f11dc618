"""`tillstamp hq predict` and `hq predict export`: fit, score and store predictions; export them."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .base import UsageError, emit


def _as_of(text: str | None, zone_name: str) -> dt.date:
    from zoneinfo import ZoneInfo

    if text is None:
        return dt.datetime.now(ZoneInfo(zone_name)).date()
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of {text!r}: expected a date YYYY-MM-DD") from None


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar on a terminal (stderr), nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import Progress

    labels = {"read": "membaca riwayat / reading history", "write": "menyimpan / storing predictions"}
    with Progress(transient=True, console=None) as bar:
        tasks: dict[str, Any] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(labels.get(stage, stage), total=total or 1)
            bar.update(tasks[stage], completed=done, total=total or 1)

        yield update


def cmd_predict(args: argparse.Namespace) -> int:
    """Fit on history before --as-of, score every member and store the run."""
    from ..hq.predict import PredictError, run_predictions
    from ..hq.service import Hq
    from ..hq.store import open_hq_store
    from ..hq.tags import refresh_tags

    hq = Hq(open_hq_store(args.db))
    try:
        program = hq.program()
        as_of = _as_of(args.as_of, program.timezone if program else "Asia/Jakarta")
        with _progress(sys.stderr.isatty() and not getattr(args, "json", False)) as progress:
            out = run_predictions(hq.store, as_of, now=dt.datetime.now(dt.UTC), progress=progress)
        # New predictions change hints (reorder due): members whose hints changed reach the tills.
        out["tags"] = refresh_tags(hq, as_of).to_json()
    except PredictError as e:
        raise UsageError(f"hq predict: {e}") from None
    finally:
        hq.store.close()
    bg = out["models"].get("bgnbd", {})
    emit(args, out, lambda d: (f"predicted {d['members']} members as of {d['as_of']} (run {d['run']}, "
                               f"{d['model_version']}); BG/NBD r={bg.get('r', 0):.3f} "
                               f"alpha={bg.get('alpha', 0):.3f} a={bg.get('a', 0):.3f} b={bg.get('b', 0):.3f}"))
    return 0


def cmd_predict_export(args: argparse.Namespace) -> int:
    """Write the newest predictions as JSON lines or CSV."""
    from ..hq.predict import EXPORT_COLS, PredictError, export
    from ..hq.store import open_hq_store

    store = open_hq_store(args.db)
    out = open(args.out, "w", encoding="utf-8", newline="") if args.out else sys.stdout  # noqa: SIM115
    n = 0
    try:
        rows = export(store)
        if args.format == "csv":
            writer = csv.writer(out)
            writer.writerow(EXPORT_COLS)
            for r in rows:
                writer.writerow([json.dumps(r[k], ensure_ascii=False) if isinstance(r[k], list) else r[k]
                                 for k in EXPORT_COLS])
                n += 1
        else:
            for r in rows:
                out.write(json.dumps(r, ensure_ascii=False) + "\n")
                n += 1
    except PredictError as e:
        raise UsageError(f"hq predict export: {e}") from None
    finally:
        store.close()
        if out is not sys.stdout:
            out.close()
    if args.out:
        print(f"wrote {n} members to {Path(args.out)}", file=sys.stderr)
    return 0


def register(hq: Any, common: argparse.ArgumentParser) -> None:
    """Add `hq predict` and `hq predict export` under `tillstamp hq`."""
    p = hq.add_parser("predict", parents=[common], help="fit and store predictions (who returns, when, what)",
                      description="Fit the models on sales before --as-of (a date D means D 00:00 store time), "
                                  "score every member and store the run. `hq predict export` writes them out.")
    p.add_argument("--as-of", metavar="DATE", help="YYYY-MM-DD (default: today, store time)")
    p.set_defaults(func=cmd_predict)
    sub = p.add_subparsers(dest="predict_sub", metavar="ACTION", required=False, parser_class=type(p))
    e = sub.add_parser("export", parents=[common], help="write the newest predictions (JSON lines or CSV)",
                       description="One row per member: member, external_id, p_alive, p_visit_14d, "
                                   "expected_visits_30d, value_12m, next_visit, best_hour, best_weekday, "
                                   "churn_risk, skus, categories, reorder.")
    e.add_argument("--format", choices=("jsonl", "csv"), default="jsonl", help="default jsonl")
    e.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    e.set_defaults(func=cmd_predict_export)
