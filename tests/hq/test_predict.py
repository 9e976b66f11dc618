"""`hq predict`: stored runs fitted on the read model's sale lines before as-of, and the export."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import random
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tillstamp.cli import main
from tillstamp.hq.predict import PredictError, epoch_day, run_predictions
from tillstamp.hq.predicted import churn_risk, explain
from tillstamp.hq.store import open_hq_store

AS_OF = dt.date(2026, 6, 1)
NOW = dt.datetime(2026, 6, 1, 1, 0, tzinfo=dt.UTC)
LINE_COLS = ("sale", "line", "member", "store", "terminal", "receipt", "at_utc", "local_date", "day",
             "local_hour", "weekday", "sku", "name", "category", "qty", "amount")


def shop_lines(seed: int = 7, members: int = 40, start: dt.date = dt.date(2026, 1, 5),
               end: dt.date = AS_OF) -> list[tuple[Any, ...]]:
    """Sale lines of a small coffee shop: regulars every few days, some who stopped coming."""
    rng = random.Random(seed)
    rows = []
    for m in range(members):
        gap = rng.choice([2, 3, 5, 9, 14, 30])
        stop = end - dt.timedelta(days=rng.choice([0, 0, 0, 20, 60]))
        day = start + dt.timedelta(days=rng.randrange(10))
        hour = rng.choice([7, 8, 12, 16])
        n = 0
        while day < stop:
            receipt = f"R{m}-{n}"
            for line, (sku, cat, price) in enumerate(rng.sample(
                    [("KOPI-SUSU", "coffee", 25000), ("LATTE", "coffee", 32000),
                     ("CROISSANT", "pastry", 22000), ("BEANS-250", "beans", 95000)], k=rng.randint(1, 2))):
                at = dt.datetime.combine(day, dt.time(hour, rng.randrange(60)), dt.timezone(dt.timedelta(hours=7)))
                rows.append((f"S{seed}-{m}-{n}", line, f"M{m:03d}", "JKT-01", "T1", f"{seed}-{receipt}",
                             at.astimezone(dt.UTC).isoformat(), day.isoformat(), epoch_day(day), hour,
                             day.weekday(), sku, sku.title(), cat, 1, price))
            n += 1
            day += dt.timedelta(days=max(1, round(rng.expovariate(1 / gap))))
    return rows


def put_lines(url: str, rows: list[tuple[Any, ...]]) -> None:
    """Write sale lines straight into the read model (what ingest or import maintains)."""
    cols = ", ".join(LINE_COLS)
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(f"INSERT INTO sale_lines({cols}) VALUES ({', '.join('?' * len(LINE_COLS))})", rows)
    else:
        with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as c:
            c.executemany(f"INSERT INTO sale_lines({cols}) VALUES ({', '.join(['%s'] * len(LINE_COLS))})", rows)


@pytest.fixture(params=["sqlite", "postgresql"])
def hq_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'hq.db'}"
    else:
        url = str(request.getfixturevalue("pg_server").url())
    open_hq_store(url).close()  # create the schema
    return url


def test_a_run_scores_every_member_with_history_and_is_what_the_export_shows(hq_url):
    rows = shop_lines()
    put_lines(hq_url, rows)
    store = open_hq_store(hq_url)
    try:
        out = run_predictions(store, AS_OF, now=NOW)
        members = {r[2] for r in rows if r[8] < epoch_day(AS_OF)}
        assert out["members"] == len(members)
        assert set(out["models"]["bgnbd"]) >= {"r", "alpha", "a", "b", "ll", "unit"}
        assert set(out["models"]["gamma_gamma"]) >= {"p", "q", "gamma"}
        latest = store.latest_run()
        assert latest["run"] == out["run"] and latest["as_of"] == "2026-06-01"
        from tillstamp.hq.predict import export

        exported = list(export(store, page=7))  # pages shorter than the run
        assert [e["member"] for e in exported] == sorted(members)
        for e in exported:
            assert 0.0 <= e["p_visit_14d"] <= 1.0 and 0.0 <= e["p_alive"] <= 1.0
            assert 0 <= e["best_hour"] <= 23 and 0 <= e["best_weekday"] <= 6
            assert e["next_visit"] is None or dt.date.fromisoformat(e["next_visit"]) >= AS_OF
            assert len(e["skus"]) <= 10 and set(e["skus"]) <= {"KOPI-SUSU", "LATTE", "CROISSANT", "BEANS-250"}
            assert e["churn_risk"] == churn_risk(e["p_visit_14d"])
            for r in e["reorder"]:
                assert dt.date.fromisoformat(r["due"]) and r["category"] in {"coffee", "pastry", "beans"}
        regulars = [e for e in exported if e["member"] in {r[2] for r in rows if r[8] >= epoch_day(AS_OF) - 5}]
        lapsed = [e for e in exported if e not in regulars]
        # those who came in the last five days are likelier to come back than those who did not
        assert sum(e["p_visit_14d"] for e in regulars) / len(regulars) > \
            sum(e["p_visit_14d"] for e in lapsed) / len(lapsed)
    finally:
        store.close()


def test_nothing_on_or_after_as_of_influences_a_prediction(tmp_path):
    early = shop_lines(end=AS_OF)
    later = shop_lines(seed=99, start=AS_OF, end=AS_OF + dt.timedelta(days=40))
    results = []
    for name, rows in (("a", early), ("b", early + later)):
        url = f"sqlite:///{tmp_path / name}.db"
        open_hq_store(url).close()
        put_lines(url, rows)
        store = open_hq_store(url)
        run_predictions(store, AS_OF, now=NOW)
        from tillstamp.hq.predict import export

        results.append(list(export(store)))
        store.close()
    assert results[0] == results[1]


def test_predictions_are_versioned_runs_and_readers_see_only_complete_ones(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    open_hq_store(url).close()
    put_lines(url, shop_lines())
    store = open_hq_store(url)
    first = run_predictions(store, AS_OF - dt.timedelta(days=30), now=NOW)
    import tillstamp.hq.predict as predict_module

    monkeypatch.setattr(predict_module, "WRITE_CHUNK", 5)

    def crash(*a, **kw):
        raise RuntimeError("killed after the first chunks")

    calls = {"n": 0}
    real = store.put_predictions

    def put_then_crash(rows):
        calls["n"] += 1
        if calls["n"] == 3:
            crash()
        real(rows)

    monkeypatch.setattr(store, "put_predictions", put_then_crash)
    with pytest.raises(RuntimeError):
        run_predictions(store, AS_OF, now=NOW)
    assert store.latest_run()["run"] == first["run"]  # the half-written run is invisible
    monkeypatch.setattr(store, "put_predictions", real)
    second = run_predictions(store, AS_OF, now=NOW)
    assert store.latest_run()["run"] == second["run"] > first["run"]
    member = store.member_prediction("M000")
    assert member is not None and member["run"] == second["run"]
    store.close()


def test_no_history_before_as_of_is_a_clear_refusal(tmp_path):
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    open_hq_store(url).close()
    put_lines(url, shop_lines(start=AS_OF, end=AS_OF + dt.timedelta(days=30)))
    store = open_hq_store(url)
    with pytest.raises(PredictError, match="nothing to fit on"):
        run_predictions(store, AS_OF, now=NOW)
    assert store.latest_run() is None
    store.close()


def test_cli_predict_and_export(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'hq.db'}"
    open_hq_store(url).close()
    put_lines(url, shop_lines())
    assert main(["hq", "predict", "export", "--db", url]) == 2
    assert "no predictions yet" in capsys.readouterr().err
    assert main(["hq", "predict", "--db", url, "--as-of", "2026-06-01", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["as_of"] == "2026-06-01" and out["members"] == 40
    assert out["models"]["bgnbd"]["unit"] == "week"
    assert main(["hq", "predict", "--db", url, "--as-of", "1 June"]) == 2
    assert "expected a date" in capsys.readouterr().err

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["hq", "predict", "export", "--db", url, "--format", "jsonl"]) == 0
    lines = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert len(lines) == 40
    assert set(lines[0]) >= {"member", "external_id", "p_alive", "p_visit_14d", "expected_visits_30d",
                             "value_12m", "next_visit", "best_hour", "best_weekday", "skus", "categories",
                             "reorder"}
    target = tmp_path / "p.csv"
    assert main(["hq", "predict", "export", "--db", url, "--format", "csv", "--out", str(target)]) == 0
    table = list(csv.DictReader(target.open(encoding="utf-8")))
    assert [r["member"] for r in table] == [x["member"] for x in lines]
    assert json.loads(table[0]["skus"]) == lines[0]["skus"]


def test_the_sentence_a_shopkeeper_reads():
    pred = {"usual_gap_days": 9.0, "p_visit_14d": 0.35}
    today = dt.date(2026, 6, 1)
    last = epoch_day(today) - 23
    assert explain(pred, last, today, "id") == \
        "biasanya datang tiap 9 hari; terakhir 23 hari lalu; kemungkinan kembali 2 minggu ini: 35 %"
    assert explain(pred, last, today, "en") == \
        "usually comes every 9 days; last visit 23 days ago; chance of coming back in the next 2 weeks: 35 %"
    assert explain({"usual_gap_days": None, "p_visit_14d": 0.1}, epoch_day(today), today) == \
        "baru sekali datang; terakhir datang hari ini; kemungkinan kembali 2 minggu ini: 10 %"


@pytest.mark.parametrize(("p", "band"), [(0.0, "high"), (0.19, "high"), (0.2, "medium"), (0.49, "medium"),
                                         (0.5, "low"), (1.0, "low")])
def test_churn_risk_bands(p, band):
    assert churn_risk(p) == band


def test_the_member_record_shows_the_newest_predictions_in_plain_words(tmp_path):
    from tillstamp.hq.record import MemberRef, member_record

    url = f"sqlite:///{tmp_path / 'hq.db'}"
    store = open_hq_store(url)
    store.close()
    rows = shop_lines()
    put_lines(url, rows)
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO crm_members(member, store, last_day) VALUES ('M001', 'JKT-01', ?)",
                     (max(r[8] for r in rows if r[2] == "M001"),))
    store = open_hq_store(url)
    try:
        assert "predictions" not in member_record(store, None, MemberRef(member="M001"), NOW) or \
            member_record(store, None, MemberRef(member="M001"), NOW)["predictions"] is None
        run_predictions(store, AS_OF, now=NOW)
        rec = member_record(store, None, MemberRef(member="M001"), NOW)
        pred = rec["predictions"]
        assert pred is not None and 0 <= pred["p_visit_14d"] <= 1
        assert pred["sentence"]["id"].endswith(f"kemungkinan kembali 2 minggu ini: {round(100 * pred['p_visit_14d'])} %")
        assert "chance of coming back in the next 2 weeks" in pred["sentence"]["en"]
    finally:
        store.close()
