"""Next-basket recommendations: what a member is likely to buy on the next visit.

`predict` uses `RepeatRanker`: a logistic ranker over each member's own items and a few
popular ones, on repeat-purchase features, blended with own history with recency decay by a
weight chosen on a validation split before as_of. `NextBasket` is TIFU-KNN (Hu, Yeung, Li,
Wang, Zeng & He 2020, "Modeling Personalized Item Frequency Information for Next-basket
Recommendation", SIGIR): a member's recency-decayed mean basket vector blended with their k
nearest neighbours' (cosine); with no neighbours it is the own-history baseline the benchmark
measures. See docs/INSIGHT.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from tillstamp.insight.history import unique_int
from tillstamp.insight.revisit import Logistic

__all__ = ["NextBasket", "RepeatRanker", "basket_vectors", "candidates", "top_k"]


def basket_vectors(
    member: np.ndarray,
    day: np.ndarray,
    item: np.ndarray,
    n_members: int,
    n_items: int,
    decay: float,
) -> sparse.csr_matrix:
    """Recency-decayed mean basket vector per member: sum_j decay^j b_j / sum_j decay^j.

    A basket is a member's items on one local date; j counts baskets back from the latest
    (j = 0). Items without a code (negative) are left out.
    """
    ok = item >= 0
    member, day, item = member[ok], day[ok].astype(np.int64), item[ok]
    if len(member) == 0:
        return sparse.csr_matrix((n_members, n_items))
    basket_key = member.astype(np.int64) * 1_000_000 + day
    uniq_b, b_of_line = unique_int(basket_key, return_inverse=True)
    b_member = (uniq_b // 1_000_000).astype(np.int64)
    # Baskets are sorted by member then day: rank back from each member's last basket.
    counts = np.bincount(b_member, minlength=n_members)
    ends = np.cumsum(counts)
    j = ends[b_member] - 1 - np.arange(len(uniq_b))
    bw = decay ** j.astype(np.float64)
    norm = np.bincount(b_member, weights=bw, minlength=n_members)
    # One entry per (basket, item): an item twice in a basket counts once.
    pair, _ = unique_int(b_of_line.astype(np.int64) * (n_items + 1) + item)
    pb, pi = pair // (n_items + 1), pair % (n_items + 1)
    w = bw[pb] / norm[b_member[pb]]
    m = sparse.csr_matrix((w, (b_member[pb], pi)), shape=(n_members, n_items))
    m.sum_duplicates()
    return m


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first (ties by lower index)."""
    k = min(k, scores.shape[1])
    if k == 0:
        return np.zeros((scores.shape[0], 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    return np.take_along_axis(part, order, axis=1)


class NextBasket:
    """TIFU-KNN next-basket scores: alpha * own decayed vector + (1 - alpha) * neighbours' mean."""

    popularity_: np.ndarray
    vectors_: sparse.csr_matrix

    def __init__(
        self,
        decay: float = 0.95,
        neighbours: int = 100,
        alpha: float = 0.7,
        pool: int = 20_000,
        chunk: int = 512,
    ) -> None:
        self.decay = decay
        self.neighbours = neighbours
        self.alpha = alpha
        self.pool = pool
        self.chunk = chunk

    def fit(
        self,
        member: np.ndarray,
        day: np.ndarray,
        item: np.ndarray,
        n_members: int,
        n_items: int,
    ) -> NextBasket:
        """Build member vectors and item popularity (share of baskets with the item)."""
        self.n_items = n_items
        self.vectors_ = basket_vectors(member, day, item, n_members, n_items, self.decay)
        ok = item >= 0
        key, _ = unique_int(
            (member[ok].astype(np.int64) * 1_000_000 + day[ok].astype(np.int64)) * (n_items + 1)
            + item[ok]
        )
        pop = np.bincount(key % (n_items + 1), minlength=n_items + 1)[:n_items].astype(float)
        self.popularity_ = pop / max(pop.max(initial=0.0), 1.0)
        return self

    def recommend(self, k: int = 10) -> np.ndarray:
        """Top-k item codes per member, best first; -1 pads rows when there are fewer items."""
        U = self.vectors_
        n = U.shape[0]
        out = np.full((n, min(k, self.n_items)), -1, dtype=np.int64)
        if n == 0 or self.n_items == 0:
            return out
        norms = np.sqrt(np.asarray(U.multiply(U).sum(axis=1)).ravel())
        Un = sparse.diags(1.0 / np.maximum(norms, 1e-12)) @ U
        active = np.flatnonzero(norms > 0)
        # Neighbours come from a bounded pool (the members with the most items) so that the
        # cost stays linear in the number of members.
        if len(active) > self.pool:
            nnz = np.diff(U.indptr)[active]
            pool_idx = np.sort(active[np.argsort(-nnz, kind="stable")[: self.pool]])
        else:
            pool_idx = active
        pool_n = Un[pool_idx].T.tocsr()
        pool_u = U[pool_idx]
        kn = min(self.neighbours, max(len(pool_idx) - 1, 0))
        top_pop = np.argsort(-self.popularity_, kind="stable")[: out.shape[1]]
        for lo in range(0, n, self.chunk):
            rows = np.arange(lo, min(lo + self.chunk, n))
            score = self.alpha * U[rows]
            if kn > 0:
                sim = (Un[rows] @ pool_n).toarray()
                # A member is never their own neighbour.
                self_pos = np.searchsorted(pool_idx, rows)
                inpool = (self_pos < len(pool_idx)) & (
                    pool_idx[np.minimum(self_pos, len(pool_idx) - 1)] == rows
                )
                sim[np.flatnonzero(inpool), self_pos[inpool]] = -np.inf
                nb = np.argpartition(-sim, kn - 1, axis=1)[:, :kn]
                w = sparse.csr_matrix(
                    (
                        np.full(nb.size, 1.0 / kn),
                        (np.repeat(np.arange(len(rows)), kn), nb.ravel()),
                    ),
                    shape=(len(rows), len(pool_idx)),
                )
                score = score + (1.0 - self.alpha) * (w @ pool_u)
            score = sparse.csr_matrix(score)
            # Rank only the items some row scores, plus the most popular to fill short lists.
            cols = np.flatnonzero(
                np.bincount(np.r_[score.indices, top_pop], minlength=self.n_items) > 0
            )
            dense = score[:, cols].toarray() + 1e-9 * self.popularity_[cols]
            # A member with nothing to go on gets what is popular.
            empty = norms[rows] == 0
            dense[empty] = self.popularity_[cols]
            out[rows] = cols[top_k(dense, out.shape[1])]
        return out


RANKER_FEATURES = (
    "log_count",
    "decay_90",
    "decay_97",
    "share",
    "log_baskets_since",
    "log_days_since",
    "log_member_baskets",
    "log_popularity",
    "item_repeat_rate",
    "log_due_ratio",
    "owned",
    "share_x_repeat",
    "decay_70",
    "in_last_basket",
    "log_days_due_ratio",
    "log_item_gap_days",
    "log_member_gap_days",
    "log_member_recency_days",
    "log_member_basket_size",
    "member_repeat_share",
    "log_recent_popularity",
    "group_decay_90",
    "own_rank",
    "decay_95",
    "next_type_share",
    "log_next_type_ratio",
    "hazard_next_visit",
    "log_item_gaps",
    "share_gaps_longer",
    "owned_x_member_repeat",
    "log_popularity_x_member_repeat",
    "decay_95_x_log_member_baskets",
    "log_days_due_ratio_x_log_member_recency",
    "decay_90_x_log_member_basket_size",
)


@dataclass(frozen=True, eq=False)
class Candidates:
    """Candidate (member, item) pairs with their features as of a cut-off."""

    member: np.ndarray  # int64
    item: np.ndarray  # int64
    slot: np.ndarray  # int64: own items 0.. by decayed frequency, then popular ones
    width: int  # slots per member
    X: np.ndarray  # float32 (n_pairs, len(RANKER_FEATURES))


def _group_reduce(
    ufunc: np.ufunc, values: np.ndarray, by_g: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    return np.asarray(ufunc.reduceat(values[by_g], starts))


def _basket_type_share(
    b_member: np.ndarray,
    b_size: np.ndarray,
    bw: np.ndarray,
    g_of: np.ndarray,
    g_m: np.ndarray,
    pb: np.ndarray,
    n_members: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per (member, item) group: its decayed share of the baskets of the type expected next,
    and that over its share of all baskets (in log).

    A basket is "small" when it holds no more items than the member's median basket; the
    chance that the next one is small is the member's own rate of small after a basket of the
    type of their last one (shrunk toward everyone's rate by 2 pseudo-baskets), since many
    households alternate a big weekly shop with small top-ups. The share in each type is
    shrunk toward the item's share in all the member's baskets by half a basket.
    """
    nb = np.bincount(b_member, minlength=n_members)
    ends = np.cumsum(nb)
    has = nb > 0
    # Baskets are sorted by member then day; sort sizes within members for the median.
    by_size = np.lexsort((b_size, b_member))
    median = np.zeros(n_members)
    median[has] = b_size[by_size][(ends - nb + (nb - 1) // 2)[has]]
    small = b_size <= median[b_member]
    follows = np.r_[False, b_member[1:] == b_member[:-1]]
    before_small = np.r_[False, small[:-1]]
    last_small = np.zeros(n_members, bool)
    last_small[has] = small[ends[has] - 1]
    same = follows & (before_small == last_small[b_member])
    overall = float(small[follows].mean()) if follows.any() else 0.5
    p_small = (
        np.bincount(b_member[same], weights=small[same].astype(np.float64), minlength=n_members)
        + 2 * overall
    ) / (np.bincount(b_member[same], minlength=n_members) + 2)
    n_small = np.bincount(b_member, weights=bw * small, minlength=n_members)
    n_big = np.bincount(b_member, weights=bw * ~small, minlength=n_members)
    in_small = np.bincount(g_of, weights=(bw * small)[pb], minlength=len(g_m))
    in_big = np.bincount(g_of, weights=(bw * ~small)[pb], minlength=len(g_m))
    share = (in_small + in_big) / np.maximum(n_small + n_big, 1e-12)[g_m]
    s_small = (in_small + 0.5 * share) / (n_small[g_m] + 0.5)
    s_big = (in_big + 0.5 * share) / (n_big[g_m] + 0.5)
    ps = p_small[g_m]
    expected = ps * s_small + (1 - ps) * s_big
    return expected, np.log((expected + 1e-3) / ((s_small + s_big) / 2 + 1e-3))


def _gap_hazard(
    g_day: np.ndarray,
    by_g: np.ndarray,
    g_of: np.ndarray,
    last_day: np.ndarray,
    horizon: np.ndarray,
    cut_day: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (member, item) group from its own days between purchases: the chance it is bought
    within `horizon` days given `cut_day - last_day` days without it (Kaplan-Meier-like, with
    0.3 of a purchase in 1 pseudo-gap), log(1 + gaps), and the share of gaps longer than now.

    Why a hazard and not a ratio: "days since over the usual gap" says an item is late, but an
    item bought every 7 days and one bought every 7 to 60 days are not equally due at day 10.
    0 for items bought once.
    """
    n = len(last_day)
    g_sorted, d_sorted = g_of[by_g], g_day[by_g]
    follows = np.r_[False, g_sorted[1:] == g_sorted[:-1]]
    gaps = (d_sorted[1:] - d_sorted[:-1]).astype(np.float64)[follows[1:]]
    g_gap = g_sorted[follows]
    since = (cut_day - last_day).astype(np.float64)
    n_gaps = np.bincount(g_gap, minlength=n).astype(np.float64)
    longer = np.bincount(g_gap, weights=gaps > since[g_gap], minlength=n)
    beyond = np.bincount(g_gap, weights=gaps > since[g_gap] + horizon[g_gap], minlength=n)
    bought = n_gaps >= 1
    hazard = np.where(bought, (longer - beyond + 0.3) / (longer + 1.0), 0.0)
    survive = np.where(bought, (longer + 0.5) / (n_gaps + 1.0), 0.0)
    return hazard, np.log1p(n_gaps), survive


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
) -> Candidates:
    """Each member's `per_member` best own items by decayed frequency plus the `popular` most
    popular items, with repeat-purchase features computed from baskets before `cut` only.

    `group` maps an item code to a group code (a SKU's category, -1 for none): the member's
    decayed frequency of the item's group is then a feature (0 without it).
    """
    ok = (item >= 0) & (day < cut)
    m, d, it = member[ok].astype(np.int64), day[ok].astype(np.int64), item[ok].astype(np.int64)
    z = np.zeros(0, np.int64)
    empty = Candidates(
        z, z, z, per_member + popular, np.zeros((0, len(RANKER_FEATURES)), np.float32)
    )
    if len(m) == 0:
        return empty
    cut_day = int(np.asarray(cut).astype("datetime64[D]").astype(np.int64))
    bkey, b_of_line = unique_int(m * 1_000_000 + d, return_inverse=True)
    b_member, b_day = bkey // 1_000_000, bkey % 1_000_000
    nb = np.bincount(b_member, minlength=n_members)
    j = (np.cumsum(nb)[b_member] - 1 - np.arange(len(bkey))).astype(np.float64)
    norm70 = np.bincount(b_member, weights=0.7**j, minlength=n_members)
    norm90 = np.bincount(b_member, weights=0.9**j, minlength=n_members)
    norm97 = np.bincount(b_member, weights=0.97**j, minlength=n_members)
    norm95 = np.bincount(b_member, weights=0.95**j, minlength=n_members)
    pair, _ = unique_int(b_of_line * (n_items + 1) + it)
    pb, pi = pair // (n_items + 1), pair % (n_items + 1)
    pm = b_member[pb]
    # Group (basket, item) entries by (member, item).
    gkey, g_of = unique_int(pm * n_items + pi, return_inverse=True)
    g_m, g_i = gkey // n_items, gkey % n_items
    cnt = np.bincount(g_of, minlength=len(gkey)).astype(np.float64)
    dec70 = np.bincount(g_of, weights=0.7 ** j[pb], minlength=len(gkey)) / norm70[g_m]
    dec90 = np.bincount(g_of, weights=0.9 ** j[pb], minlength=len(gkey)) / norm90[g_m]
    dec97 = np.bincount(g_of, weights=0.97 ** j[pb], minlength=len(gkey)) / norm97[g_m]
    dec95 = np.bincount(g_of, weights=0.95 ** j[pb], minlength=len(gkey)) / norm95[g_m]
    # Per-group min/max by sorting entries by group, then reducing each run.
    by_g = np.argsort(g_of, kind="stable")
    g_starts = np.r_[0, np.cumsum(cnt.astype(np.int64))][:-1]
    last_j = _group_reduce(np.minimum, j[pb], by_g, g_starts)
    first_j = _group_reduce(np.maximum, j[pb], by_g, g_starts)
    last_day = _group_reduce(np.maximum, b_day[pb], by_g, g_starts)
    first_day = _group_reduce(np.minimum, b_day[pb], by_g, g_starts)
    # Member-level: days between baskets, days since the last, items per basket, and the share
    # of basket items the member had bought before (their taste for repeats).
    # Baskets are sorted by member then day: each member's first and last are the run's ends.
    m_first = np.full(n_members, cut_day, np.int64)
    m_last = np.full(n_members, cut_day, np.int64)
    ends = np.cumsum(nb)
    has = nb > 0
    m_first[has] = b_day[(ends - nb)[has]]
    m_last[has] = b_day[ends[has] - 1]
    m_gap = (m_last - m_first) / np.maximum(nb - 1, 1)
    m_size = np.bincount(pm, minlength=n_members) / np.maximum(nb, 1)
    m_repeat = np.bincount(g_m, weights=cnt - 1, minlength=n_members) / np.maximum(
        np.bincount(pm, minlength=n_members), 1
    )
    # Item-level: share of baskets with the item (overall and in the last 28 days), and how
    # often its buyers buy it again.
    pop = np.bincount(pi, minlength=n_items).astype(np.float64) / max(len(bkey), 1)
    recent_b = b_day[pb] >= cut_day - 28
    recent_pop = np.bincount(pi[recent_b], minlength=n_items).astype(np.float64) / max(
        int((b_day >= cut_day - 28).sum()), 1
    )
    again = np.bincount(g_i, weights=cnt - 1, minlength=n_items)
    chances = np.bincount(g_i, weights=first_j, minlength=n_items)
    repeat_rate = (again + 1.0) / (chances + 10.0)
    # The member's decayed frequency of each group (one entry per basket and group).
    n_groups = int(group.max(initial=-1)) + 1 if group is not None else 0
    if group is not None and n_groups > 0:
        bg_of = group[pi]
        okg = bg_of >= 0
        gk, _ = unique_int(pb[okg] * (n_groups + 1) + bg_of[okg])
        gb, gg = gk // (n_groups + 1), gk % (n_groups + 1)
        gkey2, g2_of = unique_int(b_member[gb] * n_groups + gg, return_inverse=True)
        gdec = np.bincount(g2_of, weights=0.9 ** j[gb], minlength=len(gkey2))
        gdec = gdec / norm90[gkey2 // n_groups]
    # Keep each member's best own items.
    order = np.lexsort((-dec90, g_m))
    starts = np.r_[0, np.cumsum(np.bincount(g_m, minlength=n_members))][:-1]
    rank = np.arange(len(order)) - starts[g_m[order]]
    keep = order[rank < per_member]
    own_slot = rank[rank < per_member]
    own_m, own_i = g_m[keep], g_i[keep]
    # Popular items each member has not bought (among those kept or not).
    top = np.argsort(-pop, kind="stable")[:popular]
    top = top[pop[top] > 0]
    members_seen = np.flatnonzero(nb > 0)
    pm_all = np.repeat(members_seen, len(top))
    pi_all = np.tile(top, len(members_seen))
    owned_keys = gkey
    pk = pm_all * n_items + pi_all
    pos = np.searchsorted(owned_keys, pk)
    is_owned = (pos < len(owned_keys)) & (owned_keys[np.minimum(pos, len(owned_keys) - 1)] == pk)
    pop_m, pop_i = pm_all[~is_owned], pi_all[~is_owned]
    pop_slot = per_member + np.tile(np.arange(len(top)), len(members_seen))[~is_owned]
    cm = np.r_[own_m, pop_m]
    ci = np.r_[own_i, pop_i]
    n_own = len(keep)
    zeros = np.zeros(len(pop_m))
    c_cnt = np.r_[cnt[keep], zeros]
    c_share = c_cnt / np.maximum(nb[cm], 1)
    c_last_j = np.r_[last_j[keep], nb[pop_m].astype(np.float64)]
    c_days = np.r_[cut_day - last_day[keep], np.full(len(pop_m), 365.0)]
    many = c_cnt[:n_own] > 1
    interval = np.where(many, (first_j[keep] - last_j[keep]) / np.maximum(c_cnt[:n_own] - 1, 1), 0)
    due = np.r_[np.log((last_j[keep] + 1) / (interval + 1)), zeros]
    # The same "due" in days: days since bought over the member's own days between purchases
    # of it (the repeat cycle), or over their days between visits when bought once.
    gap_days = np.where(
        many,
        (last_day[keep] - first_day[keep]) / np.maximum(c_cnt[:n_own] - 1, 1),
        np.maximum(m_gap[own_m], 1.0) * np.maximum(nb[own_m], 1),
    )
    days_due = np.r_[np.log((cut_day - last_day[keep] + 1) / (gap_days + 1)), zeros]
    rr = repeat_rate[ci]
    if group is not None and n_groups > 0:
        cg = group[ci].astype(np.int64)
        gk2 = cm * n_groups + np.maximum(cg, 0)
        p2 = np.searchsorted(gkey2, gk2)
        hit = (cg >= 0) & (p2 < len(gkey2)) & (gkey2[np.minimum(p2, len(gkey2) - 1)] == gk2)
        group_dec = np.where(hit, gdec[np.minimum(p2, len(gkey2) - 1)], 0.0)
    else:
        group_dec = np.zeros(len(cm))
    # The basket's context and each item's hazard (own items only; 0 for popular ones).
    b_size = np.bincount(pb, minlength=len(bkey)).astype(np.float64)
    type_share, type_ratio = _basket_type_share(
        b_member, b_size, 0.9**j, g_of, g_m, pb, n_members
    )
    hazard, log_gaps, survive = _gap_hazard(
        b_day[pb], by_g, g_of, last_day, np.maximum(m_gap, 1.0)[g_m], cut_day
    )
    columns = (
        lambda: np.log1p(c_cnt),
        lambda: np.r_[dec90[keep], zeros],
        lambda: np.r_[dec97[keep], zeros],
        lambda: c_share,
        lambda: np.log1p(c_last_j),
        lambda: np.log1p(c_days),
        lambda: np.log1p(nb[cm]),
        lambda: np.log(pop[ci] + 1e-6),
        lambda: rr,
        lambda: due,
        lambda: np.r_[np.ones(n_own), zeros],
        lambda: c_share * rr,
        lambda: np.r_[dec70[keep], zeros],
        lambda: np.r_[last_j[keep] == 0, zeros].astype(np.float64),
        lambda: days_due,
        lambda: np.log1p(np.r_[gap_days, np.full(len(pop_m), 365.0)]),
        lambda: np.log1p(m_gap[cm]),
        lambda: np.log1p(cut_day - m_last[cm]),
        lambda: np.log1p(m_size[cm]),
        lambda: m_repeat[cm],
        lambda: np.log(recent_pop[ci] + 1e-6),
        lambda: group_dec,
        lambda: np.r_[own_slot, np.full(len(pop_m), per_member)].astype(np.float64),
        lambda: np.r_[dec95[keep], zeros],
        lambda: np.r_[type_share[keep], zeros],
        lambda: np.r_[type_ratio[keep], zeros],
        lambda: np.r_[hazard[keep], zeros],
        lambda: np.r_[log_gaps[keep], zeros],
        lambda: np.r_[survive[keep], zeros],
    )
    # Products of a few item features with member features: a member-level feature alone
    # moves all of a member's candidates alike and cannot change their order; these let the
    # member's taste for repeats, length of history, recency and basket size reweigh them.
    products = (
        ("owned", "member_repeat_share"),
        ("log_popularity", "member_repeat_share"),
        ("decay_95", "log_member_baskets"),
        ("log_days_due_ratio", "log_member_recency_days"),
        ("decay_90", "log_member_basket_size"),
    )
    # Filled one column at a time into float32: at 200,000 members there are millions of
    # candidates, and a list of float64 columns stacked at once would need twice the memory.
    X = np.empty((len(cm), len(columns) + len(products)), dtype=np.float32)
    for f, column in enumerate(columns):
        X[:, f] = column()
    col = RANKER_FEATURES.index
    for f, (a, b) in enumerate(products, start=len(columns)):
        X[:, f] = X[:, col(a)] * X[:, col(b)]
    return Candidates(cm, ci, np.r_[own_slot, pop_slot], per_member + popular, X)


BLENDS = (0.0, 0.25, 0.5, 0.75)
"""Weights of own history with decay 0.95 in the final score, tried on the validation split."""


@dataclass(frozen=True, eq=False)
class _Labelled:
    """Candidates as of a cut-off, labelled by the member's first basket after it."""

    c: Candidates
    y: np.ndarray  # 1.0 when the item is in that basket
    w: np.ndarray  # 1/|basket|, 0 for members without a basket in the window


class RepeatRanker:
    """Next basket by a logistic ranker over own-history and popular candidates, blended with
    own history with decay 0.95 by a weight chosen on a validation split before `as_of`.

    Features are a member's repeat-purchase history of each item (count, share of baskets,
    recency-decayed frequencies, baskets and days since, whether it is "due" at the member's
    own interval in baskets and in days), the member's visit rhythm, basket size and taste for
    repeats, their affinity for the item's group (a SKU's category), and the item's popularity
    (overall and recent) and how often its buyers buy it again. The model is trained on the
    first basket after cut-offs `validation_days` before `as_of`, weighting each basket's items
    by 1/|basket| so that the loss follows recall. The final score is
    (1 - a) log p + a log(decay-0.95 frequency); a is the one of `blends` with the best NDCG@k
    on the first basket after the first cut-off for a model trained on the cut-offs one step
    earlier, so nothing on or after `as_of` chooses it.
    """

    model_: Logistic | None
    blend_: float
    validation_: dict[float, float]

    def __init__(
        self,
        validation_days: tuple[int, ...] = (28, 56, 84),
        l2: float = 1e-3,
        train_members: int = 8_000,
        seed: int = 0,
        blends: tuple[float, ...] = BLENDS,
    ) -> None:
        self.validation_days = validation_days
        self.l2 = l2
        self.train_members = train_members
        self.seed = seed
        self.blends = blends

    def fit_recommend(
        self,
        member: np.ndarray,
        day: np.ndarray,
        item: np.ndarray,
        n_members: int,
        n_items: int,
        as_of: dt.date,
        k: int = 10,
        group: np.ndarray | None = None,
    ) -> np.ndarray:
        """Top-k item codes per member from lines before `as_of`; -1 pads short rows.

        `group` maps each item code to a group code (-1 for none), e.g. a SKU to its category.
        """
        today = np.datetime64(as_of, "D")
        # Train on a seeded sample of members: the weights need thousands, not millions.
        tm, td, ti = member, day, item
        if n_members > self.train_members:
            rng = np.random.default_rng(self.seed)
            chosen = np.zeros(n_members, bool)
            chosen[rng.choice(n_members, self.train_members, replace=False)] = True
            keep = chosen[member]
            tm, td, ti = member[keep], day[keep], item[keep]
        # Labelled sets at the training cut-offs and one step further back, each labelled by
        # the first basket before the next later cut-off (or as_of).
        step = self.validation_days[0]
        backs = [*self.validation_days, self.validation_days[-1] + step]
        sets: dict[int, _Labelled] = {}
        end = today
        for back in backs:
            cut = today - np.timedelta64(back, "D")
            c = candidates(tm, td, ti, n_members, n_items, cut, group=group)
            y, w = _first_basket_labels(tm, td, ti, n_items, cut, end, c)
            sets[back] = _Labelled(c, y, w)
            end = cut
        self.blend_, self.validation_ = 0.0, {}
        earlier = self._fit([sets[b] for b in backs[1:]])
        if earlier is not None:
            v = sets[backs[0]]
            raw = earlier.predict_proba(v.c.X)
            found = {a: _ndcg(v, _blend(raw, v.c.X, a), n_members, k) for a in self.blends}
            # NaN when nobody shopped in the validation window: then no blend, and no NaN in
            # the parameters head office stores as JSON.
            if found and np.isfinite(list(found.values())).all():
                self.validation_ = found
                # The first of the best: ties keep the smaller weight (the list's order).
                self.blend_ = max(found, key=lambda a: found[a])
        self.model_ = self._fit([sets[b] for b in backs[:-1]])
        out = np.full((n_members, min(k, n_items)), -1, dtype=np.int64)
        c = candidates(member, day, item, n_members, n_items, today, group=group)
        if self.model_ is None:
            col = RANKER_FEATURES.index
            score = c.X[:, col("decay_90")] + 1e-3 * c.X[:, col("log_popularity")]
        else:
            # In blocks: standardizing all candidates at once would copy them to float64.
            score = np.empty(len(c.X))
            for lo in range(0, len(c.X), 1_000_000):
                block = c.X[lo : lo + 1_000_000]
                score[lo : lo + len(block)] = _blend(
                    self.model_.predict_proba(block), block, self.blend_
                )
        best_items, _ = _top_per_member(c, score, n_members, out.shape[1])
        out[:, : best_items.shape[1]] = best_items
        return out

    def _fit(self, sets: list[_Labelled]) -> Logistic | None:
        """The logistic ranker on these labelled sets; None if they have too few labels."""
        use = [s.w > 0 for s in sets]
        X = np.concatenate([s.c.X[u] for s, u in zip(sets, use, strict=True)])
        y = np.concatenate([s.y[u] for s, u in zip(sets, use, strict=True)])
        w = np.concatenate([s.w[u] for s, u in zip(sets, use, strict=True)])
        if len(y) < 20 or y.min() == y.max():
            return None
        # Newton: the same optimum as BFGS in a tenth of the passes over ~10^5-10^6 rows.
        return Logistic(self.l2, solver="newton").fit(X, y, sample_weight=w)


def _blend(p: np.ndarray, X: np.ndarray, a: float) -> np.ndarray:
    """(1 - a) log p + a log(own frequency with decay 0.95): a = 0 is the ranker alone."""
    own = X[:, RANKER_FEATURES.index("decay_95")]
    # Items the member never bought (own = 0) keep the ranker's order among themselves.
    return (1 - a) * np.log(np.maximum(p, 1e-300)) + a * np.log(own + 1e-4)


def _top_per_member(
    c: Candidates, score: np.ndarray, n_members: int, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k candidate items per member (-1 where fewer) and their candidate-row indices."""
    # A member's candidates sit in slots of one row: top-k per row, ties to the lower slot.
    scores = np.full((n_members, c.width), -np.inf)
    scores[c.member, c.slot] = score
    rows = np.full((n_members, c.width), -1, dtype=np.int64)
    rows[c.member, c.slot] = np.arange(len(c.member))
    best = top_k(scores, k)
    picked = np.take_along_axis(rows, best, axis=1)
    valid = np.isfinite(np.take_along_axis(scores, best, axis=1)) & (picked >= 0)
    picked = np.where(valid, picked, -1)
    items = np.where(valid, c.item[np.maximum(picked, 0)], -1)
    return items, picked


def _ndcg(v: _Labelled, score: np.ndarray, n_members: int, k: int) -> float:
    """Mean NDCG@k over members with a labelled basket (its size is 1/w, in or out of the
    candidates)."""
    _, picked = _top_per_member(v.c, score, n_members, k)
    hit = np.where(picked >= 0, v.y[np.maximum(picked, 0)], 0.0)
    size = np.zeros(n_members)
    size[v.c.member[v.w > 0]] = 1.0 / v.w[v.w > 0]
    ok = size > 0
    if not ok.any():
        return float("nan")
    disc = 1.0 / np.log2(np.arange(2, hit.shape[1] + 2))
    ideal = np.cumsum(disc)[np.minimum(np.rint(size[ok]).astype(np.int64), hit.shape[1]) - 1]
    return float(((hit[ok] * disc).sum(axis=1) / ideal).mean())


def _first_basket_labels(
    member: np.ndarray,
    day: np.ndarray,
    item: np.ndarray,
    n_items: int,
    start: np.datetime64,
    end: np.datetime64,
    c: Candidates,
) -> tuple[np.ndarray, np.ndarray]:
    """Whether each candidate is in its member's first basket in [start, end), and 1/|basket|
    as its weight (0 for members with no basket then)."""
    ok = (day >= start) & (day < end) & (item >= 0)
    m, d, it = member[ok].astype(np.int64), day[ok], item[ok].astype(np.int64)
    n = int(max(c.member.max(initial=-1), m.max(initial=-1))) + 1
    first = np.full(n, np.datetime64("NaT"), dtype="datetime64[D]")
    if len(m):
        order = np.lexsort((d, m))
        s = np.r_[True, m[order][1:] != m[order][:-1]]
        first[m[order][s]] = d[order][s]
    in_first = d == first[m] if len(m) else np.zeros(0, bool)
    keys, _ = unique_int(m[in_first] * n_items + it[in_first])
    size = np.bincount(keys // n_items, minlength=n).astype(np.float64)
    ck = c.member * n_items + c.item
    pos = np.searchsorted(keys, ck)
    y = (
        (pos < len(keys)) & (keys[np.minimum(pos, max(len(keys) - 1, 0))] == ck)
        if len(keys)
        else (np.zeros(len(ck), bool))
    )
    w = np.where(size[c.member] > 0, 1.0 / np.maximum(size[c.member], 1), 0.0)
    return y.astype(np.float64), w
