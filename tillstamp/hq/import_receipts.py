"""The receipts of `hq import`, built column by column from the checked rows.

`importer.py` reads and checks the files into one table of rows; here the rows are grouped
into receipts (store, receipt) and turned into what the store writes: per receipt its event
(id, time, canonical body) and per line its `sale_lines` row. Everything that runs once per
line is an array operation (pyarrow, numpy); Python runs once per receipt, and only for what
must match the read model's own Python exactly (times in the store's zone, the hashes).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import repeat
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import numpy as np

from ..loyalty import events as ev
from .readmodel import Figures

if TYPE_CHECKING:
    import pyarrow as pa

IMPORT_TERMINAL = "IMPORT"
_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_CROCKFORD = np.frombuffer(b"0123456789ABCDEFGHJKMNPQRSTVWXYZ", dtype=np.uint8)


@dataclass(frozen=True)
class Catalogue:
    """The products file as columns: each SKU once (its first row), with name and category."""

    skus: pa.Array
    names: pa.Array
    categories: pa.Array


@dataclass
class ReceiptChunk:
    """Receipts ready to write, column-wise: per receipt (`ids` … `weekday`) and per line
    (`sku` … `amount`; `first[i]:first[i + 1]` are receipt i's lines), and the file rows held."""

    ids: np.ndarray  # object: the sale event's id
    stores: np.ndarray
    receipts: np.ndarray
    members: np.ndarray  # object: member id or None
    at: np.ndarray  # object: the sale's time, UTC ISO text
    bodies: pa.Array  # canonical JSON of each sale's body
    local_date: np.ndarray
    day: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray
    totals: np.ndarray  # int64: each sale's amount (its lines' sum)
    first: np.ndarray  # int64, receipts + 1 offsets into the line columns
    sku: np.ndarray
    name: np.ndarray
    category: np.ndarray
    qty: np.ndarray
    amount: np.ndarray
    rows: int
    texts: pa.Table  # sku, name, category per line, as pyarrow read them (`line_columns` takes them as they are)

    def __len__(self) -> int:
        return len(self.ids)

    def events(self, keep: np.ndarray, first_seq: int) -> list[tuple[Any, ...]]:
        """`events` rows (EVENT_COLS order: the digest last) of the receipts `keep`, numbered
        from `first_seq` under the import terminal."""
        ids, stores, members, at, refs, seqs, bodies, digests = self._event_parts(keep, first_seq)
        return list(zip(ids, repeat(IMPORT_TERMINAL), stores, seqs, repeat(ev.SALE), members, at, repeat(0), refs,
                        bodies.to_pylist(), digests, strict=False))

    def event_columns(self, keep: np.ndarray, first_seq: int) -> list[Any]:
        """The same rows as `events`, as columns (EVENT_COLS order): arrays, or one value for all."""
        import pyarrow as pa

        ids, stores, members, at, refs, seqs, bodies, digests = self._event_parts(keep, first_seq)
        text = pa.string()
        return [pa.array(ids, text), IMPORT_TERMINAL, pa.array(stores, text), pa.array(seqs, pa.int64()), ev.SALE,
                pa.array(members, text), pa.array(at, text), 0, pa.array(refs, text), bodies, pa.array(digests, text)]

    def _event_parts(self, keep: np.ndarray, first_seq: int) -> tuple[Any, ...]:
        """ids, stores, members, times, refs, seqs (lists), bodies (array) and digests of the
        receipts `keep`. The digest is `loyalty.events.head_json` and the body hashed as
        ingest hashes them, the head written for all rows at once."""
        import pyarrow as pa
        import pyarrow.compute as pc

        ids, stores, members, at = (self.ids[keep].tolist(), self.stores[keep].tolist(),
                                    self.members[keep].tolist(), self.at[keep].tolist())
        refs = [f"{s}/{r}" for s, r in zip(stores, self.receipts[keep].tolist(), strict=True)]
        seqs = list(range(first_seq, first_seq + len(ids)))
        bodies = self.bodies.take(pa.array(keep))
        # ids (ULIDs) and times (ISO) need no escaping; the rest is text from the files
        heads = pc.binary_join_element_wise(
            '{"at":"', pa.array(at, pa.string()), '","id":"', pa.array(ids, pa.string()),
            f'","kind":"{ev.SALE}","member":', pc.fill_null(_json(pa.array(members, pa.string())), "null"),
            ',"ref":', _json(pa.array(refs, pa.string())), ',"seq":', pc.cast(pa.array(seqs, pa.int64()), pa.string()),
            ',"stamps":0,"store":', _json(pa.array(stores, pa.string())),
            f',"terminal":{encode_basestring(IMPORT_TERMINAL)}}}\x1f', bodies, "")
        sha = hashlib.sha256
        digests = [sha(h.encode()).hexdigest() for h in heads.to_pylist()]
        return ids, stores, members, at, refs, seqs, bodies, digests

    def not_held(self, held: set[str]) -> np.ndarray:
        """Indexes of the receipts whose event id is not in `held`."""
        if not held:
            return np.arange(len(self))
        return np.array([i for i, x in enumerate(self.ids.tolist()) if x not in held], dtype=np.int64)

    def line_index(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For the receipts `keep`: each of their lines' index in the line columns, and its receipt."""
        counts = np.diff(self.first)[keep]
        idx = np.repeat(self.first[keep] - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        return idx + np.arange(int(counts.sum())), np.repeat(keep, counts)

    def lines(self, keep: np.ndarray, members: np.ndarray) -> list[tuple[Any, ...]]:
        """`sale_lines` rows (SALE_LINE_COLS order) of the receipts `keep`, with `members` per
        receipt (a merged member's survivor in place of the member)."""
        idx, rec = self.line_index(keep)
        line = idx - self.first[rec]
        return list(zip(self.ids[rec].tolist(), line.tolist(), members[rec].tolist(), self.stores[rec].tolist(),
                        repeat(IMPORT_TERMINAL), self.receipts[rec].tolist(), self.at[rec].tolist(),
                        self.local_date[rec].tolist(), self.day[rec].tolist(), self.hour[rec].tolist(),
                        self.weekday[rec].tolist(), self.sku[idx].tolist(), self.name[idx].tolist(),
                        self.category[idx].tolist(), self.qty[idx].tolist(), self.amount[idx].tolist(), repeat(0)))

    def line_columns(self, keep: np.ndarray, members: np.ndarray) -> list[Any]:
        """The same rows as `lines`, as columns (SALE_LINE_COLS order): pyarrow arrays, a
        receipt's values once per line, or one value for all."""
        import pyarrow as pa

        idx, rec = self.line_index(keep)
        text = pa.string()
        each = pa.array(rec)

        def per_receipt(values: np.ndarray) -> pa.Array:
            return pa.DictionaryArray.from_arrays(each, pa.array(values.tolist(), text))

        texts = self.texts.take(pa.array(idx))
        line = idx - self.first[rec]
        return [per_receipt(self.ids), pa.array(line), per_receipt(members), per_receipt(self.stores),
                IMPORT_TERMINAL, per_receipt(self.receipts), per_receipt(self.at), per_receipt(self.local_date),
                pa.array(self.day[rec]), pa.array(self.hour[rec]), pa.array(self.weekday[rec]),
                texts.column("sku"), texts.column("name"), texts.column("category"), pa.array(self.qty[idx]),
                pa.array(self.amount[idx]), 0]


def derived_ids(prefix: Sequence[str], stores: Sequence[str], receipts: Sequence[str]) -> np.ndarray:
    """`loyalty.events.derived_id(*prefix, store, receipt)` for many receipts at once: the
    hashes one by one, the ULID text (Crockford base32 of the first 16 bytes) as arrays."""
    head = "\x1f".join(prefix) + "\x1f"
    sha = hashlib.sha256
    raw = b"".join(sha(f"{head}{s}\x1f{r}".encode()).digest()[:16] for s, r in zip(stores, receipts, strict=True))
    words = np.frombuffer(raw, dtype=">u8").reshape(-1, 2).astype(np.uint64)
    hi, lo = words[:, 0], words[:, 1]
    digits = np.empty((len(words), 26), dtype=np.uint8)
    for j in range(26):  # digit j holds bits 125-5j .. 129-5j of the 130-bit number
        s = 125 - 5 * j
        if s >= 64:
            v = hi >> np.uint64(s - 64)
        elif s + 5 <= 64:
            v = lo >> np.uint64(s)
        else:
            v = (hi << np.uint64(64 - s)) | (lo >> np.uint64(s))
        digits[:, j] = (v & np.uint64(31)).astype(np.uint8)
    text = _CROCKFORD[digits].tobytes()
    return np.array([text[i:i + 26].decode() for i in range(0, len(text), 26)], dtype=object)


def _ranks(col: pa.Array) -> np.ndarray:
    """Each value's rank among the column's distinct values (text order), per row."""
    import pyarrow.compute as pc

    coded = col.dictionary_encode()
    order = pc.array_sort_indices(coded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank[coded.indices.to_numpy(zero_copy_only=False)]


def receipt_keys(table: pa.Table) -> tuple[np.ndarray, int]:
    """Each row's receipt as a number (receipts numbered in (store, receipt) order) and how many."""
    stores, receipts = _ranks(table.column("store").combine_chunks()), _ranks(table.column("receipt").combine_chunks())
    key = stores * (int(receipts.max()) + 1 if len(receipts) else 1) + receipts
    _uniq, inverse = np.unique(key, return_inverse=True)
    return inverse.reshape(-1), len(_uniq)


def member_codes(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """Each row's member as an index into the distinct member ids (-1: none), and the ids."""
    import pyarrow.compute as pc

    coded = table.column("member").combine_chunks().dictionary_encode()
    return pc.fill_null(coded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64), coded.dictionary.to_pylist()


def clashes(table: pa.Table) -> tuple[np.ndarray, dict[int, list[str]]]:
    """Rows of receipts whose rows name two members (a mask), and those members per row."""
    keys, count = receipt_keys(table)
    codes, names = member_codes(table)
    named = codes >= 0
    lo = np.full(count, np.iinfo(np.int64).max)
    hi = np.full(count, -1)
    np.minimum.at(lo, keys[named], codes[named])
    np.maximum.at(hi, keys[named], codes[named])
    two = (hi >= 0) & (lo != hi)
    rows = two[keys]
    hit = np.flatnonzero(rows)
    named_by: dict[int, set[str]] = {}
    for k, c in zip(keys[hit].tolist(), codes[hit].tolist(), strict=True):  # only the clashing rows
        if c >= 0:
            named_by.setdefault(k, set()).add(names[c])
    who = {k: sorted(v) for k, v in named_by.items()}
    return rows, {i: who[k] for i, k in zip(hit.tolist(), keys[hit].tolist(), strict=True)}


def chunks(table: pa.Table, catalogue: Catalogue | None, ids: dict[str, str], source: str, tz: str,
           lines_per_chunk: int) -> Iterator[ReceiptChunk]:
    """The receipts in chunks of about `lines_per_chunk` lines (whole receipts), in the order
    they are stored: by the receipt's time, then store and receipt; a receipt's lines by
    time, then file and row. (Stored order is fold order: a member's `store` is where they
    were first seen, here the store of their earliest receipt.)"""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    if n == 0:
        return
    keys, count = receipt_keys(table)
    at = table.column("at").to_numpy()
    earliest = np.full(count, np.iinfo(np.int64).max)
    np.minimum.at(earliest, keys, at)
    place = np.empty(count, dtype=np.int64)
    place[np.lexsort((np.arange(count), earliest))] = np.arange(count)
    codes, names = member_codes(table)
    owner = np.full(count, -1)
    np.maximum.at(owner, keys, codes)  # one member per receipt at most (clashes were taken out)
    slot = place[keys]
    filerow = (table.column("file").to_numpy().astype(np.int64) << 40) | table.column("row").to_numpy()
    order = np.lexsort((filerow, at, slot))
    table = table.take(pa.array(order))
    first = np.concatenate(([0], np.cumsum(np.bincount(slot, minlength=count))))
    by_place = np.empty(count, dtype=np.int64)
    by_place[place] = np.arange(count)
    member_ids = np.array([ids[m] for m in names] + [None], dtype=object)
    owners = member_ids[owner[by_place]]  # -1 picks the trailing None
    names_col, cats_col = table.column("name").combine_chunks(), table.column("category").combine_chunks()
    if catalogue is not None:
        found = pc.index_in(table.column("sku"), value_set=catalogue.skus)
        names_col = pc.coalesce(names_col, pc.take(catalogue.names, found))
        cats_col = pc.coalesce(cats_col, pc.take(catalogue.categories, found))
    table = table.set_column(table.schema.get_field_index("name"), "name", names_col)
    table = table.set_column(table.schema.get_field_index("category"), "category", cats_col)
    zone = ZoneInfo(tz)
    literals: dict[str, str] = {}  # text -> its JSON literal: each distinct SKU, name, category once
    lo = 0
    while lo < count:
        hi = int(np.searchsorted(first, first[lo] + lines_per_chunk, side="left"))
        hi = min(max(hi, lo + 1), count)
        part = table.slice(int(first[lo]), int(first[hi] - first[lo]))
        yield _chunk(part, first[lo:hi + 1] - first[lo], owners[lo:hi], source, tz, zone, literals)
        lo = hi


def local_times(at_us: np.ndarray, zone: ZoneInfo) -> tuple[np.ndarray, ...]:
    """UTC microseconds as `readmodel.local_time` sees them in `zone`, for many times at once:
    (UTC ISO text, local date text, epoch day, local hour, weekday).

    A zone's offset is looked up once per distinct UTC hour, at both ends of it: where they
    agree it holds for the whole hour (offsets change at most once an hour), where they
    differ (the hour of a change) each time is looked up on its own."""
    hours = at_us // 3_600_000_000
    distinct, which = np.unique(hours, return_inverse=True)
    which = which.reshape(-1)

    def offset(us: int) -> int:
        off = (_UTC_EPOCH + dt.timedelta(microseconds=us)).astimezone(zone).utcoffset()
        return off // dt.timedelta(microseconds=1) if off is not None else 0

    start = np.array([offset(h * 3_600_000_000) for h in distinct.tolist()], dtype=np.int64)
    end = np.array([offset(h * 3_600_000_000 + 3_599_999_999) for h in distinct.tolist()], dtype=np.int64)
    shift = start[which]
    for i in np.flatnonzero((start != end)[which]).tolist():
        shift[i] = offset(int(at_us[i]))
    local = at_us + shift
    day = local // 86_400_000_000
    hour = (local // 3_600_000_000) % 24
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
    local_date = np.datetime_as_string(day.astype("datetime64[D]")).astype(object)
    whole = np.datetime_as_string(at_us.astype("datetime64[us]"), unit="s").astype(object)
    micro = at_us % 1_000_000
    text = whole + "+00:00"
    for i in np.flatnonzero(micro).tolist():  # isoformat shows microseconds only when there are some
        text[i] = f"{whole[i]}.{int(micro[i]):06d}+00:00"
    return text, local_date, day, hour, weekday


def _optional(key: str, values: pa.Array, literals: dict[str, str] | None = None) -> pa.Array:
    """`,"key":value` of each line, or nothing where the value is null."""
    import pyarrow.compute as pc

    return pc.fill_null(pc.binary_join_element_wise(f',"{key}":', _json(values, literals), ""), "")


def _json(col: pa.Array, literals: dict[str, str] | None = None) -> pa.Array:
    """Text as JSON string literals (as `canonical` writes them), null kept: each distinct value
    encoded once (once per import with a shared `literals`)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    coded = col.dictionary_encode()
    seen = {} if literals is None else literals
    texts = []
    for v in coded.dictionary.to_pylist():
        got = seen.get(v)
        if got is None:
            got = seen[v] = encode_basestring(v)
        texts.append(got)
    return pc.take(pa.array(texts, pa.string()), coded.indices)


def _chunk(part: pa.Table, first: np.ndarray, members: np.ndarray, source: str, tz: str, zone: ZoneInfo,
           literals: dict[str, str]) -> ReceiptChunk:
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(first) - 1
    heads = first[:-1]
    col = {name: part.column(name).combine_chunks() for name in part.column_names}
    stores = np.array(col["store"].take(pa.array(heads)).to_pylist(), dtype=object)
    receipts = np.array(col["receipt"].take(pa.array(heads)).to_pylist(), dtype=object)
    at_us = col["at"].to_numpy()
    sale_at = at_us[heads]
    ids = derived_ids(("import", source), stores.tolist(), receipts.tolist())
    at_text, local_date, day, hour, weekday = local_times(sale_at, zone)
    counts = np.diff(first)
    own = at_us != np.repeat(sale_at, counts)
    at_part: Any = ""
    if own.any():
        texts = [""] * len(at_us)
        for i in np.flatnonzero(own).tolist():
            texts[i] = ',"at":' + encode_basestring((_UTC_EPOCH + dt.timedelta(microseconds=int(at_us[i]))).isoformat())
        at_part = pa.array(texts, pa.string())
    # Each line's piece of its sale's body, keys in sorted order as in canonical JSON.
    pieces = pc.binary_join_element_wise(
        '{"amount":', pc.cast(col["amount"], pa.string()), at_part, _optional("category", col["category"], literals),
        _optional("name", col["name"], literals), ',"qty":', pc.cast(col["qty"], pa.string()), ',"sku":',
        _json(col["sku"], literals), "}", "")
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(first, pa.int32()), pieces), ",")
    amount = col["amount"]
    qty = col["qty"]
    amounts = amount.to_numpy()
    totals = np.add.reduceat(amounts, heads) if count else np.zeros(0, dtype=np.int64)
    bodies = pc.binary_join_element_wise(
        '{"lines":[', joined, '],"receipt":', _json(pa.array(receipts.tolist(), pa.string())),
        f',"source":{encode_basestring(source)},"total":', pc.cast(pa.array(totals), pa.string()),
        f',"zone":{encode_basestring(tz)}}}', "")
    return ReceiptChunk(
        ids=ids, stores=stores, receipts=receipts, members=members, at=at_text, bodies=bodies,
        local_date=local_date, day=day, hour=hour, weekday=weekday, totals=totals, first=first,
        sku=np.array(col["sku"].to_pylist(), dtype=object), name=np.array(col["name"].to_pylist(), dtype=object),
        category=np.array(col["category"].to_pylist(), dtype=object), qty=qty.to_numpy(), amount=amounts,
        rows=int(first[-1]), texts=pa.table({"sku": col["sku"], "name": col["name"], "category": col["category"]}))


class Visits:
    """The figures and day rollup of members whose every line is in this import, gathered
    chunk by chunk and computed with grouped array operations: the same numbers as
    `readmodel.figures_of` and the rollup's SQL over these lines (imported sales are never
    voided, and a receipt is one sale: its lines share member, store and time)."""

    def __init__(self) -> None:
        self._visits: list[pa.Table] = []
        self._cats: list[pa.Table] = []
        self._sales = 0

    def add(self, chunk: ReceiptChunk, keep: np.ndarray, members: np.ndarray) -> None:
        """Take the receipts `keep` of a chunk, with their members (survivors of merges)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        sale = np.arange(len(chunk), dtype=np.int64) + self._sales
        self._sales += len(chunk)
        self._visits.append(pa.table({
            "m": pa.array(members[keep].tolist(), pa.string()), "sale": sale[keep],
            "store": pa.array(chunk.stores[keep].tolist(), pa.string()), "day": chunk.day[keep],
            "hour": chunk.hour[keep], "weekday": chunk.weekday[keep], "amount": chunk.totals[keep]}))
        idx, rec = chunk.line_index(keep)
        cats = pa.table({"m": pa.array(members[rec].tolist(), pa.string()), "sale": sale[rec],
                         "category": pa.array(chunk.category[idx].tolist(), pa.string()),
                         "amount": chunk.amount[idx]})
        self._cats.append(cats.filter(pc.is_valid(cats.column("category"))))

    def figures(self, members: set[str]) -> tuple[dict[str, Figures], list[tuple[Any, ...]]]:
        """Figures and `member_days` rows (member, day, store, visits, spend) of `members`."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if not members or not self._visits:
            return {}, []
        wanted = pa.array(sorted(members), pa.string())
        visits = pa.concat_tables(self._visits)
        visits = visits.filter(pc.is_in(visits.column("m"), value_set=wanted))
        cats = pa.concat_tables(self._cats)
        cats = cats.filter(pc.is_in(cats.column("m"), value_set=wanted))
        whole = visits.group_by("m", use_threads=False).aggregate(
            [("day", "min"), ("day", "max"), ("sale", "count"), ("amount", "sum")])
        modes = [_mode(visits.group_by(["m", key], use_threads=False).aggregate(
            [("sale", "count"), ("amount", "sum")]), key) for key in ("store", "hour", "weekday")]
        modes.insert(0, _mode(cats.group_by(["m", "category"], use_threads=False).aggregate(
            [("sale", "count_distinct"), ("amount", "sum")]), "category", "sale_count_distinct"))
        out = {}
        for m, lo, hi, n, spend in zip(*(whole.column(c).to_pylist() for c in
                                         ("m", "day_min", "day_max", "sale_count", "amount_sum")), strict=True):
            out[m] = Figures(lo, hi, n, spend, *(mode.get(m) for mode in modes))
        days = visits.group_by(["m", "day", "store"], use_threads=False).aggregate(
            [("sale", "count"), ("amount", "sum")]).sort_by([("m", "ascending"), ("day", "ascending"),
                                                             ("store", "ascending")])
        return out, list(zip(*(days.column(c).to_pylist() for c in ("m", "day", "store", "sale_count",
                                                                     "amount_sum")), strict=True))


def _mode(groups: pa.Table, key: str, count: str = "sale_count") -> dict[str, Any]:
    """Per member, the value seen on most visits; ties go to more spend, then the smallest
    value (as `readmodel.mode`)."""
    import pyarrow.compute as pc

    ranked = groups.sort_by([("m", "ascending"), (count, "descending"), ("amount_sum", "descending"),
                             (key, "ascending")])
    m = ranked.column("m").combine_chunks()
    if len(m) == 0:
        return {}
    head = np.ones(len(m), dtype=bool)
    head[1:] = pc.not_equal(m.slice(1), m.slice(0, len(m) - 1)).to_numpy(zero_copy_only=False)
    picked = ranked.filter(head)
    return dict(zip(picked.column("m").to_pylist(), picked.column(key).to_pylist(), strict=True))
