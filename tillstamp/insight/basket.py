"""Next-basket recommendations: what a member is likely to buy on the next visit.

The model is TIFU-KNN (Hu, Yeung, Li, Wang, Zeng & He 2020, "Modeling Personalized Item
Frequency Information for Next-basket Recommendation", SIGIR): a member's vector is the
recency-decayed mean of their basket vectors; it is blended with the mean vector of the
member's k nearest neighbours (cosine) so that a member's repeat items come first and what
similar households buy fills in. Global popularity breaks ties and fills short lists.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from tillstamp.insight.history import unique_int

__all__ = ["NextBasket", "basket_vectors", "top_k"]


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
        self.popularity_ = pop / max(pop.max(), 1.0)
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
