"""Sale lines as numpy arrays: the one input every insight model reads.

A `History` holds one element per sale line. Members, SKUs and categories are integer codes
into sorted tuples of their string ids, so that two histories built from the same lines, in
any order, encode them the same way, and so that cutting a history at a date and compacting
it keeps the codes in the same relative order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["History", "HistoryError", "Occasions", "Row", "occasions", "receipts"]

Row = tuple[str, str, dt.datetime, str, "str | None", int]
"""One sale line: (member_id, receipt_key, at_local, sku, category, amount in minor units)."""

NO_CATEGORY = -1
_EPOCH = np.datetime64("1970-01-01", "D")


class HistoryError(ValueError):
    """A sale line or an array that cannot make a History."""


def _encode(values: npt.NDArray[np.str_] | Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Sorted unique ids and the int32 code of each value."""
    arr = np.asarray(values, dtype=str)
    if arr.size == 0:
        return (), np.zeros(0, dtype=np.int32)
    uniq, inverse = np.unique(arr, return_inverse=True)
    return tuple(str(u) for u in uniq), inverse.astype(np.int32)


@dataclass(frozen=True, eq=False)
class History:
    """Sale lines of members, one array element per line (see docs/INSIGHT.md)."""

    members: tuple[str, ...]
    skus: tuple[str, ...]
    categories: tuple[str, ...]
    member: np.ndarray  # int32 code into members
    occasion: np.ndarray  # datetime64[D], the store-local date
    local_hour: np.ndarray  # int8, 0..23 store-local
    weekday: np.ndarray  # int8, 0 = Monday
    receipt: np.ndarray  # int64 code, one per receipt
    sku: np.ndarray  # int32 code into skus
    category: np.ndarray  # int32 code into categories, -1 when the line has none
    amount: np.ndarray  # int64, minor units
    store_hours: np.ndarray | None = None  # float64 (len(members), 24): the home store's pattern

    def __post_init__(self) -> None:
        n = len(self.member)
        for name in ("occasion", "local_hour", "weekday", "receipt", "sku", "category", "amount"):
            if len(getattr(self, name)) != n:
                raise HistoryError(
                    f"{name} has {len(getattr(self, name))} elements, member has {n}"
                )
        if self.occasion.dtype != np.dtype("datetime64[D]"):
            raise HistoryError(f"occasion must be datetime64[D], not {self.occasion.dtype}")
        if self.amount.dtype.kind not in "iu":
            raise HistoryError("amount must be integer minor units")
        if n and (self.member.min() < 0 or self.member.max() >= len(self.members)):
            raise HistoryError("member code out of range")
        if n and (self.sku.min() < 0 or self.sku.max() >= len(self.skus)):
            raise HistoryError("sku code out of range")
        if n and (self.category.min() < NO_CATEGORY or self.category.max() >= len(self.categories)):
            raise HistoryError("category code out of range")
        if self.store_hours is not None and self.store_hours.shape != (len(self.members), 24):
            raise HistoryError("store_hours must have shape (len(members), 24)")

    def __len__(self) -> int:
        return len(self.member)

    @classmethod
    def from_columns(
        cls,
        member_ids: Sequence[str] | np.ndarray,
        receipt_keys: Sequence[str] | np.ndarray,
        occasion: np.ndarray,
        local_hour: np.ndarray,
        sku_ids: Sequence[str] | np.ndarray,
        category_ids: Sequence[str | None] | np.ndarray,
        amount: np.ndarray,
        store_hours: Mapping[str, Sequence[float]] | None = None,
    ) -> History:
        """Build a History from parallel columns of string ids, local dates and hours."""
        members, member = _encode(member_ids)
        _, receipt = _encode(receipt_keys)
        skus, sku = _encode(sku_ids)
        cats_raw = np.asarray(category_ids, dtype=object)
        has = np.array([isinstance(c, str) and c != "" for c in cats_raw], dtype=bool)
        categories, cat_codes = _encode(cats_raw[has].astype(str))
        category = np.full(len(cats_raw), NO_CATEGORY, dtype=np.int32)
        category[has] = cat_codes
        day = np.asarray(occasion).astype("datetime64[D]")
        # 1970-01-01 was a Thursday (weekday 3).
        weekday = ((day - _EPOCH).astype(np.int64) + 3) % 7
        return cls(
            members=members,
            skus=skus,
            categories=categories,
            member=member,
            occasion=day,
            local_hour=np.asarray(local_hour, dtype=np.int8),
            weekday=weekday.astype(np.int8),
            receipt=receipt.astype(np.int64),
            sku=sku,
            category=category,
            amount=np.asarray(amount, dtype=np.int64),
            store_hours=_store_hours(members, store_hours),
        )

    @classmethod
    def from_rows(
        cls, rows: Iterable[Row], store_hours: Mapping[str, Sequence[float]] | None = None
    ) -> History:
        """Build a History from (member_id, receipt_key, at_local, sku, category, amount) rows."""
        member_ids: list[str] = []
        receipt_keys: list[str] = []
        days: list[dt.date] = []
        hours: list[int] = []
        sku_ids: list[str] = []
        cats: list[str | None] = []
        amounts: list[int] = []
        for i, (member_id, receipt_key, at_local, sku, category, amount) in enumerate(rows):
            if at_local.tzinfo is None or at_local.utcoffset() is None:
                raise HistoryError(f"row {i}: at_local must be an aware datetime")
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise HistoryError(f"row {i}: amount must be an int in minor units")
            member_ids.append(member_id)
            receipt_keys.append(receipt_key)
            days.append(at_local.date())
            hours.append(at_local.hour)
            sku_ids.append(sku)
            cats.append(category)
            amounts.append(amount)
        return cls.from_columns(
            member_ids,
            receipt_keys,
            np.array(days, dtype="datetime64[D]"),
            np.array(hours, dtype=np.int8),
            sku_ids,
            cats,
            np.array(amounts, dtype=np.int64),
            store_hours=store_hours,
        )

    def before(self, as_of: dt.date) -> History:
        """The lines whose local date is before `as_of`, with codes compacted in the same order."""
        keep = self.occasion < np.datetime64(as_of, "D")
        return self._subset(keep)

    def _subset(self, keep: np.ndarray) -> History:
        member_used, member = compact_codes(self.member[keep], len(self.members))
        sku_used, sku = compact_codes(self.sku[keep], len(self.skus))
        cat = self.category[keep]
        has = cat >= 0
        cat_used, cat_codes = compact_codes(cat[has], len(self.categories))
        category = np.full(len(cat), NO_CATEGORY, dtype=np.int32)
        category[has] = cat_codes
        _, receipt = unique_int(self.receipt[keep], return_inverse=True)
        return History(
            members=tuple(self.members[i] for i in member_used),
            skus=tuple(self.skus[i] for i in sku_used),
            categories=tuple(self.categories[i] for i in cat_used),
            member=member.astype(np.int32),
            occasion=self.occasion[keep],
            local_hour=self.local_hour[keep],
            weekday=self.weekday[keep],
            receipt=receipt.astype(np.int64),
            sku=sku.astype(np.int32),
            category=category,
            amount=self.amount[keep],
            store_hours=None if self.store_hours is None else self.store_hours[member_used],
        )


def compact_codes(codes: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The codes in use (sorted) and each code renumbered 0..k-1 in the same order."""
    used = np.bincount(codes, minlength=n) > 0
    new = np.cumsum(used) - 1
    return np.flatnonzero(used), new[codes].astype(np.int32)


def unique_int(keys: np.ndarray, return_inverse: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique integer keys and, if asked, each key's index among them (else first index)."""
    order = np.argsort(keys, kind="stable")
    k = keys[order]
    start = np.r_[True, k[1:] != k[:-1]] if len(k) else np.zeros(0, bool)
    uniq = k[start]
    if return_inverse:
        inverse = np.empty(len(keys), dtype=np.int64)
        inverse[order] = np.cumsum(start) - 1
        return uniq, inverse
    return uniq, order[start]


def _store_hours(
    members: tuple[str, ...], store_hours: Mapping[str, Sequence[float]] | None
) -> np.ndarray | None:
    if store_hours is None:
        return None
    out = np.full((len(members), 24), np.nan)
    for i, m in enumerate(members):
        pattern = store_hours.get(m)
        if pattern is not None:
            arr = np.asarray(pattern, dtype=np.float64)
            if arr.shape != (24,) or (arr < 0).any():
                raise HistoryError(f"store_hours[{m!r}] must be 24 non-negative weights")
            out[i] = arr
    return out


@dataclass(frozen=True, eq=False)
class Occasions:
    """Purchase occasions: one element per (member, local date), sorted by member then date."""

    member: np.ndarray  # int32
    day: np.ndarray  # datetime64[D]
    spend: np.ndarray  # int64, minor units, all lines of that day
    hour: np.ndarray  # int8, hour of the day's first line
    weekday: np.ndarray  # int8
    n_members: int


def occasions(history: History) -> Occasions:
    """Merge lines into purchase occasions: a member's lines on one local date are one occasion."""
    days = (history.occasion - _EPOCH).astype(np.int64)
    key = history.member.astype(np.int64) * 1_000_000 + days
    # Sort by key, then hour so the first element of each run is the day's first visit.
    order = np.lexsort((history.local_hour, key))
    key_s = key[order]
    starts = (
        np.flatnonzero(np.r_[True, key_s[1:] != key_s[:-1]]) if len(key_s) else np.zeros(0, int)
    )
    spend = np.add.reduceat(history.amount[order], starts) if len(starts) else np.zeros(0, np.int64)
    first = order[starts]
    return Occasions(
        member=history.member[first].astype(np.int32),
        day=history.occasion[first],
        spend=spend.astype(np.int64),
        hour=history.local_hour[first],
        weekday=history.weekday[first],
        n_members=len(history.members),
    )


def receipts(history: History) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(member, local_hour, weekday) of each distinct receipt, the unit of a visit time."""
    _, first = unique_int(history.receipt)
    return history.member[first], history.local_hour[first], history.weekday[first]
