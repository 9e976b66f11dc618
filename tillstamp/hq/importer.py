"""`hq import`: a shop's past receipts (CSV, JSON lines, Parquet) as `sale.recorded` events.

Two passes, so that a bad row refuses the whole import before anything is written: the
files are read with pyarrow and every row is checked and normalised into typed columns
(minor units, UTC times), column by column; then the rows are grouped into receipts (store,
receipt) by `import_receipts` and written by `store_import`, in one transaction or chunk by
chunk, each with its read model. The rules for odd rows are in docs/HQ.md ("Importing a
shop's past").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from ..loyalty.events import derived_id
from .import_receipts import Catalogue

if TYPE_CHECKING:
    import pyarrow as pa

    from .store import HqStore, SqlHqStore

FIELDS = ("member", "receipt", "at", "store", "sku", "qty", "amount", "name", "category")
REQUIRED = ("receipt", "at", "sku", "amount")
PRODUCT_FIELDS = ("sku", "name", "category")
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}
# ISO 4217 minor-unit exponents of the currencies a shop here is likely to use. IDR is 0 in
# practice (no sen in circulation), as everywhere else in tillstamp.
MINOR_UNITS = {"IDR": 0, "JPY": 0, "KRW": 0, "VND": 0, "CLP": 0, "ISK": 0, "USD": 2, "EUR": 2, "GBP": 2,
               "SGD": 2, "MYR": 2, "THB": 2, "PHP": 2, "AUD": 2, "NZD": 2, "CNY": 2, "HKD": 2, "INR": 2,
               "CAD": 2, "CHF": 2, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3, "TND": 3}
CHUNK_LINES = 100_000  # sale lines per transaction
MAX_REPORTED = 20


class ImportRefused(ValueError):
    """An import that cannot run as asked: bad options, unreadable files or bad rows."""


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be read, with its file and 1-based row number."""

    file: str
    row: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file} row {self.row}: {self.reason}"


@dataclass(frozen=True)
class ImportOptions:
    """How to read the files (see `tillstamp hq import --help`)."""

    files: tuple[Path, ...]
    format: str | None = None
    mapping: dict[str, str] = field(default_factory=dict)
    currency: str = "IDR"
    products: Path | None = None
    product_map: dict[str, str] = field(default_factory=dict)
    tz: str = "Asia/Jakarta"
    naive_as_local: bool = False
    skip_bad: bool = False
    source: str | None = None
    store: str | None = None


@dataclass
class ImportResult:
    """What an import did."""

    rows: int
    sales: int
    new_sales: int
    members: int
    new_members: int = 0
    skipped: int = 0
    bad: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data."""
        return {"rows": self.rows, "sales": self.sales, "new_sales": self.new_sales, "members": self.members,
                "new_members": self.new_members, "skipped": self.skipped, "bad": self.bad}


def parse_map(text: str | None, allowed: Sequence[str], what: str) -> dict[str, str]:
    """`key=COL,key=COL` into a dict; unknown keys refused."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, col = part.partition("=")
        key, col = key.strip(), col.strip()
        if not sep or not col:
            raise ImportRefused(f"{what}: {part.strip()!r} is not KEY=COLUMN")
        if key not in allowed:
            raise ImportRefused(f"{what}: unknown key {key!r} (use {', '.join(allowed)})")
        out[key] = col
    return out


Progress = Callable[[str, int, int], None]  # (phase, done, total)


def run_import(store: HqStore, opts: ImportOptions, *, now: dt.datetime,
               progress: Progress | None = None) -> ImportResult:
    """Import the files into HQ: check every row, then write the receipts (docs/HQ.md)."""
    from . import store_import
    from .import_receipts import chunks

    exp = _exponent(opts.currency)
    try:
        zone = ZoneInfo(opts.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportRefused(f"--tz: unknown time zone {opts.tz!r}") from None
    if not opts.files:
        raise ImportRefused("no file to import")
    catalogue = _catalogue(opts) if opts.products else None
    table, bad = _read_all(opts, exp, zone)
    table, conflicts = _owners(table, opts)
    bad += conflicts
    if bad and not opts.skip_bad:
        shown = "; ".join(str(b) for b in bad[:5])
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise ImportRefused(f"{len(bad)} bad row(s), nothing imported: {shown}{more}; --skip-bad imports the rest")
    source = opts.source or opts.files[0].name
    rows = table.num_rows
    result = ImportResult(rows=rows, sales=0, new_sales=0, members=0, skipped=len(bad),
                          bad=[str(b) for b in bad[:MAX_REPORTED]])
    externals = sorted(set(table.column("member").drop_null().unique().to_pylist()))
    ids, result.new_members = store.import_members(externals, now)
    result.members = len(externals)
    receipts = chunks(table, catalogue, ids, source, opts.tz, CHUNK_LINES)

    def written(done: int) -> None:
        if progress is not None:
            progress("import", done, rows)

    sql = cast("SqlHqStore", store)  # the import's SQL is written for both SQL backends, not the protocol
    if store_import.bulk_fits(sql, rows):
        result.sales, result.new_sales = store_import.write_bulk(sql, receipts, sorted(set(ids.values())), now,
                                                                 written)
        return result
    done = 0
    for chunk in receipts:
        result.new_sales += store_import.write_chunk(sql, chunk, now)
        result.sales += len(chunk)
        done += chunk.rows
        written(done)
    return result


def _owners(table: pa.Table, opts: ImportOptions) -> tuple[pa.Table, list[BadRow]]:
    """Rows of a receipt that names two members are bad: which one bought is unknown. (Rows
    without a member belong to the receipt's member: see `import_receipts.chunks`.)"""
    import pyarrow as pa

    from .import_receipts import clashes

    if table.num_rows == 0:
        return table, []
    mask, who = clashes(table)
    if not who:
        return table, []
    files, rows = table.column("file").to_pylist(), table.column("row").to_pylist()
    stores, receipts = table.column("store").to_pylist(), table.column("receipt").to_pylist()
    bad = [BadRow(opts.files[files[i]].name, rows[i],
                  f"receipt {receipts[i]} of store {stores[i]} names members {', '.join(names)}")
           for i, names in sorted(who.items())]
    return table.filter(pa.array(~mask)), bad


def _exponent(currency: str) -> int:
    code = currency.strip().upper()
    if code not in MINOR_UNITS:
        raise ImportRefused(f"--currency: unknown currency {currency!r} (known: {', '.join(sorted(MINOR_UNITS))})")
    return MINOR_UNITS[code]


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt:
        if fmt not in ("csv", "jsonl", "parquet"):
            raise ImportRefused(f"--format: {fmt!r} is not csv, jsonl or parquet")
        return fmt
    got = FORMATS.get(path.suffix.lower())
    if got is None:
        raise ImportRefused(f"{path}: cannot tell the format from the suffix; give --format csv|jsonl|parquet")
    return got


def _read_table(path: Path, fmt: str) -> pa.Table:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.json as pjson
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ImportRefused(f"{path}: no such file")
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            # Every column as text: "007" stays a receipt number and "12.10" an exact amount.
            with path.open(encoding="utf-8", errors="replace") as f:
                header = f.readline().strip().lstrip("\ufeff")
            import csv

            names = next(csv.reader([header]), [])
            return pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True))
        return pjson.read_json(path)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as e:
        raise ImportRefused(f"{path}: cannot read as {fmt}: {str(e).splitlines()[0]}") from None


def _catalogue(opts: ImportOptions) -> Catalogue:
    """sku -> (name, category) from the --products file (the first row of a SKU wins), as columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    assert opts.products is not None
    path = opts.products
    table = _read_table(path, _format_of(path, None))
    cols = {k: opts.product_map.get(k, k) for k in PRODUCT_FIELDS}
    missing = [f"{k}={c}" for k, c in cols.items() if c not in table.column_names and (k == "sku" or k in
                                                                                      opts.product_map)]
    if missing:
        raise ImportRefused(f"--product-map: {', '.join(missing)}: no such column in {path.name} "
                            f"(columns: {', '.join(table.column_names)})")
    n = table.num_rows
    skus = _texts(table.column(cols["sku"]))
    names = _texts(table.column(cols["name"])) if cols["name"] in table.column_names else pa.nulls(n, pa.string())
    cats = (_texts(table.column(cols["category"])) if cols["category"] in table.column_names
            else pa.nulls(n, pa.string()))
    keep = pc.is_valid(skus)
    skus, names, cats = skus.filter(keep), names.filter(keep), cats.filter(keep)
    firsts = pa.table({"s": skus, "i": pa.array(np.arange(len(skus)))}).group_by("s", use_threads=False).aggregate(
        [("i", "min")])
    pick = pc.sort_indices(firsts.column("i_min")).to_numpy()
    pick = firsts.column("i_min").to_numpy()[pick]
    return Catalogue(skus.take(pick), names.take(pick), cats.take(pick))


_WHITESPACE = "".join(chr(i) for i in range(0x3001) if chr(i).isspace())  # what str.strip() strips


def _texts(col: Any) -> pa.Array:
    """A column as trimmed text (as str.strip() trims), empty text as null."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if pa.types.is_floating(col.type):  # 12.0 as a code is "12"
        col = pc.cast(col, pa.int64(), safe=False) if pc.all(pc.equal(col, pc.floor(col))).as_py() else col
    texts = pc.utf8_trim(pc.cast(col, pa.string()), characters=_WHITESPACE)
    return pc.if_else(pc.equal(texts, ""), pa.scalar(None, pa.string()), texts)


def _read_all(opts: ImportOptions, exp: int, zone: ZoneInfo) -> tuple[pa.Table, list[BadRow]]:
    """Every file read, checked and normalised: one table of (file, row, member, store,
    receipt, at, sku, qty, amount, name, category), plus the bad rows."""
    import pyarrow as pa

    parts = []
    bad: list[BadRow] = []
    for fi, path in enumerate(opts.files):
        fmt = _format_of(path, opts.format)
        table = _read_table(path, fmt)
        cols = {k: opts.mapping.get(k, k) for k in FIELDS}
        missing = [f"--map {k}={c}: no such column" for k, c in cols.items()
                   if c not in table.column_names and k in opts.mapping]
        missing += [f"{k} (no column {cols[k]!r}; give --map {k}=COLUMN)" for k in REQUIRED
                    if k not in opts.mapping and cols[k] not in table.column_names]
        if "store" not in opts.mapping and cols["store"] not in table.column_names and opts.store is None:
            missing.append("store (no column 'store'; give --map store=COLUMN or --store ID)")
        if missing:
            raise ImportRefused(f"{path.name}: {'; '.join(missing)} (columns: {', '.join(table.column_names)})")
        n = table.num_rows

        def col(key: str, table: pa.Table = table, cols: dict[str, str] = cols, n: int = n) -> Any:
            got = table.column(cols[key]) if cols[key] in table.column_names else pa.nulls(n)
            return got.combine_chunks() if isinstance(got, pa.ChunkedArray) else got

        normal, file_bad = _normalise(path.name, fi, n, col, opts, exp, zone)
        bad += file_bad
        parts.append(normal)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return table, bad


class _Bad:
    """Reasons of bad rows by row index: the first reason found for a row is the one reported."""

    def __init__(self, n: int):
        self.mask = np.zeros(n, dtype=bool)
        self.why: dict[int, str] = {}

    def add(self, where: Any, reason: Callable[[int], str] | str) -> None:
        """Mark the rows where `where` (a boolean array) is true, unless already bad."""
        hit = np.asarray(where, dtype=bool) & ~self.mask
        for i in np.flatnonzero(hit).tolist():
            self.why[i] = reason if isinstance(reason, str) else reason(i)
        self.mask |= hit


def _normalise(name: str, fi: int, n: int, col: Callable[[str], Any], opts: ImportOptions, exp: int,
               zone: ZoneInfo) -> tuple[pa.Table, list[BadRow]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    bad = _Bad(n)
    receipts, skus, stores = _texts(col("receipt")), _texts(col("sku")), _texts(col("store"))
    bad.add(_nulls(receipts), "no receipt")
    bad.add(_nulls(skus), "no sku")
    if opts.store is None:
        bad.add(_nulls(stores), "no store")
    else:
        stores = pc.fill_null(stores, opts.store)
    qty = _ints(col("qty"), n, bad)
    amount = _amounts(col("amount"), n, exp, bad)
    at = _times(col("at"), n, opts.naive_as_local, zone, bad)
    keep = pa.array(~bad.mask)
    table = pa.table({
        "file": pa.array(np.full(n, fi, dtype=np.int32)),
        "row": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "member": _texts(col("member")),
        "store": stores,
        "receipt": receipts,
        "at": pa.array(at),
        "sku": skus,
        "qty": pa.array(qty),
        "amount": pa.array(amount),
        "name": _texts(col("name")),
        "category": _texts(col("category")),
    }).filter(keep)
    return table, [BadRow(name, i + 1, reason) for i, reason in sorted(bad.why.items())]


def _nulls(col: Any) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.is_null(col).to_numpy(zero_copy_only=False)


def _by_value(column: Any, parse: Callable[[Any], tuple[int | None, str]], bad: _Bad) -> np.ndarray:
    """Parse each distinct value once (text repeats: the same price, the same time); a value
    that cannot be parsed marks its rows bad with the reason `parse` gives."""
    import pyarrow.compute as pc

    coded = column.dictionary_encode()
    values = coded.dictionary.to_pylist()
    got = [parse(v) for v in values] + [parse(None)]
    index = pc.fill_null(coded.indices, len(values)).to_numpy(zero_copy_only=False)
    parsed = np.array([v if v is not None else 0 for v, _ in got], dtype=np.int64)
    failed = np.array([v is None for v, _ in got], dtype=bool)
    if failed.any():
        bad.add(failed[index], lambda i: got[int(index[i])][1])
    return parsed[index]


def _ints(column: Any, n: int, bad: _Bad) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count == n and pa.types.is_null(column.type):
        return np.ones(n, dtype=np.int64)  # no quantity column: one of each
    if pa.types.is_integer(column.type):
        bad.add(_nulls(column), "no qty")
        return pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False)

    def parse(v: Any) -> tuple[int | None, str]:
        try:
            d = Decimal(str(v).strip()) if v is not None else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite() or d != d.to_integral_value():
            return None, f"qty {v!r} is not a whole number"
        return int(d), ""

    return _by_value(column, parse, bad)


def _amounts(column: Any, n: int, exp: int, bad: _Bad) -> np.ndarray:
    """Amounts in minor units. Text must have at most the currency's decimals; a binary
    float (Parquet, JSON numbers) cannot be "as written", so it is rounded to the minor unit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    scale = 10 ** exp
    if pa.types.is_floating(column.type):
        bad.add(_nulls(column), "no amount")
        scaled = pc.round(pc.multiply(pc.fill_null(column, 0.0), float(scale)), 0, round_mode="half_to_even")
        return pc.cast(scaled, pa.int64(), safe=False).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type):
        bad.add(_nulls(column), "no amount")
        return pc.fill_null(pc.cast(column, pa.int64()), 0).to_numpy(zero_copy_only=False) * scale
    q = Decimal(1).scaleb(-exp)

    def parse(v: Any) -> tuple[int | None, str]:
        try:
            d = Decimal(str(v).strip().replace(",", "")) if v is not None else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite():
            return None, f"amount {v!r} is not a number"
        if d.quantize(q) != d:
            return None, f"amount {v!r} has more decimals than the currency's {exp}"
        return int(d.scaleb(exp)), ""

    return _by_value(column, parse, bad)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _times(column: Any, n: int, naive_local: bool, zone: ZoneInfo, bad: _Bad) -> np.ndarray:
    """Times as microseconds since the epoch, UTC. A time without an offset is UTC, or in
    the stores' zone with --naive-as local."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type):
        if column.type.tz is None and naive_local:
            column = pc.assume_timezone(column, str(zone), ambiguous="earliest", nonexistent="earliest")
        vals = pc.cast(column, pa.timestamp("us", tz=column.type.tz) if column.type.tz else pa.timestamp("us"))
        bad.add(_nulls(vals), "no time")
        return pc.fill_null(pc.cast(vals, pa.int64()), 0).to_numpy(zero_copy_only=False)

    def parse(v: Any) -> tuple[int | None, str]:
        t: dt.datetime | None = None
        if isinstance(v, dt.datetime):
            t = v
        elif isinstance(v, str) and v.strip():
            try:
                t = dt.datetime.fromisoformat(v.strip())
            except ValueError:
                t = None
        if t is None:
            return None, f"time {v!r} is not an ISO 8601 time"
        if t.tzinfo is None:
            t = t.replace(tzinfo=zone if naive_local else dt.UTC)
        return (t - _EPOCH) // dt.timedelta(microseconds=1), ""

    return _by_value(column, parse, bad)


def sale_id(source: str, store: str, receipt: str) -> str:
    """The id of an imported receipt's event: the same file imported again adds nothing."""
    return derived_id("import", source, store, receipt)
