"""Predicted segment leaves (p_visit_14d, value_12m top %, reorder due, churn risk) read the newest
complete prediction run; the SQL agrees with the reference evaluator on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import crmdata
from tillstamp.hq import segment_sql
from tillstamp.hq.predicted import CHURN_RISKS, churn_risk
from tillstamp.hq.segments import (
    AsOf,
    Facts,
    MemberFacts,
    PredictionFacts,
    SegmentError,
    evaluate,
    parse_segment,
)
from tillstamp.hq.store import open_hq_store

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


@pytest.fixture
def store(hq_url: str) -> Any:
    s = open_hq_store(hq_url)
    yield s
    s.close()


def _clear(store: Any) -> None:
    crmdata.clear(store)
    with store._tx() as c:
        for t in ("predictions", "prediction_runs"):
            store._x(c, f"DELETE FROM {t}")


def _run(store: Any, preds: list[PredictionFacts], *, complete: bool = True) -> int:
    """Store one prediction run the way `hq predict` does."""
    run = store.start_run(crmdata.BASE, crmdata.BASE_DAY, "test", NOW, {})
    rows = [(p.member, run, 0.5, p.p_visit_14d, 1.0, p.value_12m, "2026-06-10", crmdata.BASE_DAY + 9, 9, 0,
             p.churn_risk, None, "[]", "[]", json.dumps([]), p.reorder_day) for p in preds]
    if rows:
        store.put_predictions(rows)
    if complete:
        store.finish_run(run, len(rows))
    return run


def _sql(store: Any, data: dict[str, Any], asof: AsOf) -> set[str]:
    compiled = segment_sql.compile_segment(parse_segment(data).root, asof, segment_sql.dialect_of(store))
    return {r[0] for r in segment_sql.export_rows(store, compiled)}


@st.composite
def predicted(draw: Any) -> tuple[list[MemberFacts], list[PredictionFacts]]:
    n = draw(st.integers(1, 12))
    members = [MemberFacts(f"M{i:02d}", "S1", crmdata.BASE_DAY - 30) for i in range(n)]
    preds = []
    for m in members:
        if draw(st.booleans()) or not preds:
            p = draw(st.sampled_from([0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0]))
            preds.append(PredictionFacts(m.member, p, draw(st.sampled_from([0, 10_000, 50_000, 250_000])),
                                         draw(st.one_of(st.none(), st.integers(crmdata.BASE_DAY - 5,
                                                                               crmdata.BASE_DAY + 20))),
                                         churn_risk(p)))
    return members, preds


LEAF = st.one_of(
    st.builds(lambda lo, hi: {"p_visit_14d": {"min": min(lo, hi), "max": max(lo, hi)}},
              st.sampled_from([0.0, 0.2, 0.35, 0.5]), st.sampled_from([0.35, 0.5, 1.0])),
    st.builds(lambda hi: {"p_visit_14d": {"max": hi}}, st.sampled_from([0.0, 0.3, 0.75])),
    st.builds(lambda k: {"value_12m": {"top_percent": k}}, st.sampled_from([1, 10, 25, 50, 100])),
    st.builds(lambda k: {"reorder_due_within_days": k}, st.integers(0, 14)),
    st.builds(lambda b: {"churn_risk": b}, st.lists(st.sampled_from(CHURN_RISKS), min_size=1, max_size=3,
                                                    unique=True)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=predicted(), defs=st.lists(st.one_of(LEAF, st.builds(lambda x: {"not": x}, LEAF)), min_size=1,
                                       max_size=5))
def test_predicted_leaves_agree_with_the_reference(store: Any, data: Any, defs: list[dict[str, Any]]) -> None:
    members, preds = data
    _clear(store)
    crmdata.load(store, Facts(members, []))
    _run(store, [PredictionFacts(p.member, 0.0, 0, None, "high") for p in preds])  # an older run
    _run(store, preds)
    _run(store, [PredictionFacts(p.member, 1.0, 9, None, "low") for p in preds], complete=False)  # unfinished
    facts = Facts(members, [], predictions=preds)
    asof = AsOf(crmdata.BASE, "Asia/Jakarta")
    for d in defs:
        assert _sql(store, d, asof) == evaluate(parse_segment(d).root, facts, asof), d


def test_each_predicted_leaf_selects_the_members_it_names(store: Any) -> None:
    d = crmdata.BASE_DAY
    members = [MemberFacts(m, "S1", d - 30) for m in ("A", "B", "C", "D")]
    preds = [PredictionFacts("A", 0.1, 900_000, d + 2, "high"), PredictionFacts("B", 0.4, 100_000, d + 10, "medium"),
             PredictionFacts("C", 0.8, 50_000, None, "low")]  # D: no prediction (no sale before as-of)
    _clear(store)
    crmdata.load(store, Facts(members, []))
    _run(store, preds)
    asof = AsOf(crmdata.BASE, "Asia/Jakarta")
    assert _sql(store, {"p_visit_14d": {"max": 0.3}}, asof) == {"A"}
    assert _sql(store, {"value_12m": {"top_percent": 34}}, asof) == {"A"}
    assert _sql(store, {"reorder_due_within_days": 3}, asof) == {"A"}
    assert _sql(store, {"churn_risk": ["high", "medium"]}, asof) == {"A", "B"}
    assert _sql(store, {"not": {"churn_risk": ["low"]}}, asof) == {"A", "B", "D"}


@pytest.mark.parametrize(("data", "message"), [
    ({"p_visit_14d": {"max": 1.5}}, "p_visit_14d.max: expected a probability from 0 to 1"),
    ({"p_visit_14d": {}}, "p_visit_14d: give min, max or both"),
    ({"p_visit_14d": {"min": 0.6, "max": 0.2}}, "p_visit_14d: min is above max"),
    ({"value_12m": {"top_percent": 0}}, "value_12m.top_percent"),
    ({"value_12m": {"top": 10}}, "value_12m"),
    ({"all": [{"churn_risk": ["extreme"]}]}, "all[0].churn_risk[0]: unknown churn risk 'extreme'"),
])
def test_bad_predicted_leaves_are_refused_with_the_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(SegmentError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_segment(data)
