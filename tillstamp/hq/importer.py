"""`hq import`: a shop's past receipts (CSV, JSON lines, Parquet) as `sale.recorded` events.

Two passes, so that a bad row refuses the whole import before anything is written: the
files are read with pyarrow and every row is checked and normalised into typed columns
(minor units, UTC times); then the rows are grouped into receipts (store, receipt) and
written chunk by chunk, each chunk one transaction with its read model. The rules for odd
rows are in docs/HQ.md ("Importing a shop's past").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..loyalty import events as ev
from ..loyalty.events import derived_id

if TYPE_CHECKING:
    import pyarrow as pa

    from .store import HqStore

IMPORT_TERMINAL = "IMPORT"
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
    """Import the files into HQ: check every row, then write receipts in chunks."""
    exp = _exponent(opts.currency)
    try:
        zone = ZoneInfo(opts.tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ImportRefused(f"--tz: unknown time zone {opts.tz!r}") from None
    if not opts.files:
        raise ImportRefused("no file to import")
    catalogue = _catalogue(opts) if opts.products else {}
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
    externals = sorted({m for m in table.column("member").to_pylist() if m is not None})
    ids, result.new_members = store.import_members(externals, now)
    result.members = len(externals)
    done = 0
    for chunk in _receipts(table, catalogue, ids, source, opts.tz):
        new = store.import_sales(chunk.events, now)
        result.sales += len(chunk.events)
        result.new_sales += new
        done += chunk.rows
        if progress is not None:
            progress("import", done, rows)
    return result


def _owners(table: pa.Table, opts: ImportOptions) -> tuple[pa.Table, list[BadRow]]:
    """The member of each receipt (rows without one belong to it too) as column `m` ("" for
    a guest); rows of a receipt that names two members are bad: which one bought is unknown."""
    import pyarrow as pa

    stores, receipts = table.column("store").to_pylist(), table.column("receipt").to_pylist()
    members = table.column("member").to_pylist()
    owner: dict[tuple[str, str], str] = {}
    clash: dict[tuple[str, str], set[str]] = {}
    for k, m in zip(zip(stores, receipts, strict=True), members, strict=True):
        if m is None:
            continue
        got = owner.setdefault(k, m)
        if got != m:
            clash.setdefault(k, {got}).add(m)
    bad: list[BadRow] = []
    if clash:
        files, rows = table.column("file").to_pylist(), table.column("row").to_pylist()
        keep = []
        for i, k in enumerate(zip(stores, receipts, strict=True)):
            if k in clash:
                bad.append(BadRow(opts.files[files[i]].name, rows[i],
                                  f"receipt {k[1]} of store {k[0]} names members {', '.join(sorted(clash[k]))}"))
            else:
                keep.append(i)
        table = table.take(pa.array(keep, pa.int64()))
        stores, receipts = table.column("store").to_pylist(), table.column("receipt").to_pylist()
    col = pa.array([owner.get(k, "") for k in zip(stores, receipts, strict=True)], pa.string())
    return table.append_column("m", col), bad


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


def _catalogue(opts: ImportOptions) -> dict[str, tuple[str | None, str | None]]:
    """sku -> (name, category) from the --products file (the first row of a SKU wins)."""
    assert opts.products is not None
    path = opts.products
    table = _read_table(path, _format_of(path, None))
    cols = {k: opts.product_map.get(k, k) for k in PRODUCT_FIELDS}
    missing = [f"{k}={c}" for k, c in cols.items() if c not in table.column_names and (k == "sku" or k in
                                                                                      opts.product_map)]
    if missing:
        raise ImportRefused(f"--product-map: {', '.join(missing)}: no such column in {path.name} "
                            f"(columns: {', '.join(table.column_names)})")
    skus = _texts(table.column(cols["sku"]))
    names = _texts(table.column(cols["name"])) if cols["name"] in table.column_names else [None] * len(skus)
    cats = _texts(table.column(cols["category"])) if cols["category"] in table.column_names else [None] * len(skus)
    out: dict[str, tuple[str | None, str | None]] = {}
    for s, n, c in zip(skus, names, cats, strict=True):
        if s is not None and s not in out:
            out[s] = (n, c)
    return out


def _texts(col: Any) -> list[str | None]:
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(col.type):  # 12.0 as a code is "12"
        col = pc.cast(col, pa.int64(), safe=False) if pc.all(pc.equal(col, pc.floor(col))).as_py() else col
    texts = pc.cast(col, pa.string()).to_pylist()
    return [t.strip() or None if t is not None else None for t in texts]


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
            return table.column(cols[key]) if cols[key] in table.column_names else pa.nulls(n)

        normal, file_bad = _normalise(path.name, fi, n, col, opts, exp, zone)
        bad += file_bad
        parts.append(normal)
    table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return table, bad


def _normalise(name: str, fi: int, n: int, col: Callable[[str], Any], opts: ImportOptions, exp: int,
               zone: ZoneInfo) -> tuple[pa.Table, list[BadRow]]:
    import pyarrow as pa
    import pyarrow.compute as pc

    bad: dict[int, str] = {}
    receipts = _texts(col("receipt"))
    skus = _texts(col("sku"))
    stores = _texts(col("store")) if opts.store is None or col("store").null_count < n else [opts.store] * n
    members = _texts(col("member"))
    names, cats = _texts(col("name")), _texts(col("category"))
    for i in range(n):
        if receipts[i] is None:
            bad.setdefault(i, "no receipt")
        if skus[i] is None:
            bad.setdefault(i, "no sku")
        if stores[i] is None:
            if opts.store is None:
                bad.setdefault(i, "no store")
            else:
                stores[i] = opts.store
    qty = _ints(col("qty"), n, bad)
    amount = _amounts(col("amount"), n, exp, bad)
    at = _times(col("at"), n, opts.naive_as_local, zone, bad)
    keep = [i for i in range(n) if i not in bad]
    table = pa.table({
        "file": pa.array([fi] * len(keep), pa.int32()),
        "row": pa.array([i + 1 for i in keep], pa.int64()),
        "member": pa.array([members[i] for i in keep], pa.string()),
        "store": pa.array([stores[i] for i in keep], pa.string()),
        "receipt": pa.array([receipts[i] for i in keep], pa.string()),
        "at": pc.take(pa.array(at, pa.int64()), pa.array(keep, pa.int64())) if keep else pa.array([], pa.int64()),
        "sku": pa.array([skus[i] for i in keep], pa.string()),
        "qty": pc.take(pa.array(qty, pa.int64()), pa.array(keep, pa.int64())) if keep else pa.array([], pa.int64()),
        "amount": (pc.take(pa.array(amount, pa.int64()), pa.array(keep, pa.int64())) if keep
                   else pa.array([], pa.int64())),
        "name": pa.array([names[i] for i in keep], pa.string()),
        "category": pa.array([cats[i] for i in keep], pa.string()),
    })
    return table, [BadRow(name, i + 1, reason) for i, reason in sorted(bad.items())]


def _ints(column: Any, n: int, bad: dict[int, str]) -> list[int]:
    import pyarrow as pa

    if column.null_count == n and pa.types.is_null(column.type):
        return [1] * n  # no quantity column: one of each
    if pa.types.is_integer(column.type):
        vals = column.to_pylist()
        for i, v in enumerate(vals):
            if v is None:
                bad.setdefault(i, "no qty")
        return [v if v is not None else 0 for v in vals]
    out = []
    for i, v in enumerate(column.to_pylist()):
        try:
            d = Decimal(str(v).strip()) if v is not None else None
        except InvalidOperation:
            d = None
        if d is None or d != d.to_integral_value():
            bad.setdefault(i, f"qty {v!r} is not a whole number")
            out.append(0)
        else:
            out.append(int(d))
    return out


def _amounts(column: Any, n: int, exp: int, bad: dict[int, str]) -> list[int]:
    """Amounts in minor units. Text must have at most the currency's decimals; a binary
    float (Parquet, JSON numbers) cannot be "as written", so it is rounded to the minor unit."""
    import pyarrow as pa
    import pyarrow.compute as pc

    scale = 10 ** exp
    if pa.types.is_floating(column.type):
        scaled = pc.round(pc.multiply(column, float(scale)), 0, round_mode="half_to_even")
        vals = pc.cast(scaled, pa.int64(), safe=False).to_pylist()
        for i in (column.null_count and [i for i, v in enumerate(column.to_pylist()) if v is None]) or []:
            bad.setdefault(i, "no amount")
        return [v if v is not None else 0 for v in vals]
    if pa.types.is_integer(column.type):
        vals = column.to_pylist()
        for i, v in enumerate(vals):
            if v is None:
                bad.setdefault(i, "no amount")
        return [v * scale if v is not None else 0 for v in vals]
    out = []
    q = Decimal(1).scaleb(-exp)
    for i, v in enumerate(column.to_pylist()):
        try:
            d = Decimal(str(v).strip().replace(",", "")) if v is not None else None
        except InvalidOperation:
            d = None
        if d is None or not d.is_finite():
            bad.setdefault(i, f"amount {v!r} is not a number")
            out.append(0)
        elif d.quantize(q) != d:
            bad.setdefault(i, f"amount {v!r} has more decimals than the currency's {exp}")
            out.append(0)
        else:
            out.append(int(d.scaleb(exp)))
    return out


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _times(column: Any, n: int, naive_local: bool, zone: ZoneInfo, bad: dict[int, str]) -> list[int]:
    """Times as microseconds since the epoch, UTC. A time without an offset is UTC, or in
    the stores' zone with --naive-as local."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_timestamp(column.type):
        if column.type.tz is None and naive_local:
            column = pc.assume_timezone(column, str(zone), ambiguous="earliest", nonexistent="earliest")
        vals = pc.cast(column, pa.timestamp("us", tz=column.type.tz) if column.type.tz else pa.timestamp("us"))
        out = pc.cast(vals, pa.int64()).to_pylist()
        for i, v in enumerate(out):
            if v is None:
                bad.setdefault(i, "no time")
        return [v if v is not None else 0 for v in out]
    res = []
    for i, v in enumerate(column.to_pylist()):
        t: dt.datetime | None = None
        if isinstance(v, dt.datetime):
            t = v
        elif isinstance(v, str) and v.strip():
            try:
                t = dt.datetime.fromisoformat(v.strip())
            except ValueError:
                t = None
        if t is None:
            bad.setdefault(i, f"time {v!r} is not an ISO 8601 time")
            res.append(0)
            continue
        if t.tzinfo is None:
            t = t.replace(tzinfo=zone if naive_local else dt.UTC)
        res.append((t - _EPOCH) // dt.timedelta(microseconds=1))
    return res


@dataclass
class ImportChunk:
    """Receipts ready to write: event rows (EVENT_COLS without the digest, body as a dict,
    then the body's canonical JSON) and how many file rows they hold."""

    events: list[tuple[Any, ...]]
    rows: int


def sale_id(source: str, store: str, receipt: str) -> str:
    """The id of an imported receipt's event: the same file imported again adds nothing."""
    return derived_id("import", source, store, receipt)


def _receipts(table: pa.Table, catalogue: dict[str, tuple[str | None, str | None]], ids: dict[str, str],
              source: str, tz: str) -> Any:
    """Chunks of receipts: rows grouped by (store, receipt), sorted by member so that a
    member's receipts mostly fall in one chunk (their figures are then computed once)."""
    table = table.sort_by([("m", "ascending"), ("store", "ascending"), ("receipt", "ascending"),
                           ("at", "ascending"), ("file", "ascending"), ("row", "ascending")])
    n = table.num_rows
    step = 200_000
    events: list[tuple[Any, ...]] = []
    rows_in = 0
    cur: list[tuple[Any, ...]] = []
    key: tuple[str, str] | None = None
    lines = 0

    def flush() -> None:
        nonlocal lines
        if cur:
            events.append(_event(cur, catalogue, ids, source, tz))
            lines += len(cur)

    for lo in range(0, n, step):
        part = table.slice(lo, step)
        cols = [part.column(c).to_pylist() for c in
                ("m", "store", "receipt", "at", "sku", "qty", "amount", "name", "category")]
        for r in zip(*cols, strict=True):
            k = (r[1], r[2])
            if k != key:
                flush()
                cur = []
                key = k
                if lines >= CHUNK_LINES:
                    yield ImportChunk(events, rows_in)
                    events, rows_in, lines = [], 0, 0
            cur.append(r)
            rows_in += 1
    flush()
    if events:
        yield ImportChunk(events, rows_in)


def _event(rows: list[tuple[Any, ...]], catalogue: dict[str, tuple[str | None, str | None]],
           ids: dict[str, str], source: str, tz: str) -> tuple[Any, ...]:
    """One receipt's `sale.recorded` event (EVENT_COLS order, seq 0, body as a dict)."""
    store, receipt = rows[0][1], rows[0][2]
    member_ext = rows[0][0] or None
    first = min(r[3] for r in rows)
    at = (_EPOCH + dt.timedelta(microseconds=first)).isoformat()
    lines = []
    for _m, _s, _r, t, sku, qty, amount, name, cat in rows:
        known = catalogue.get(sku)
        ln: dict[str, Any] = {"sku": sku, "qty": qty, "amount": amount}
        nm = name if name is not None else known[0] if known else None
        ct = cat if cat is not None else known[1] if known else None
        if nm is not None:
            ln["name"] = nm
        if ct is not None:
            ln["category"] = ct
        if t != first:
            ln["at"] = (_EPOCH + dt.timedelta(microseconds=t)).isoformat()
        lines.append(ln)
    body = {"receipt": receipt, "total": sum(ln["amount"] for ln in lines), "lines": lines, "zone": tz,
            "source": source}
    member = ids[member_ext] if member_ext is not None else None
    return (sale_id(source, store, receipt), IMPORT_TERMINAL, store, 0, ev.SALE, member, at, 0,
            f"{store}/{receipt}", body, body_json(body))


def _s(v: Any) -> str:
    return encode_basestring(v) if isinstance(v, str) else str(int(v))


def body_json(body: dict[str, Any]) -> str:
    """`canonical(body)` of an imported sale, written out directly: json.dumps with sorted
    keys was a fifth of an import's time. A test holds it equal to `canonical`."""
    lines = ",".join("{" + ",".join(f'"{k}":{_s(ln[k])}' for k in sorted(ln)) + "}" for ln in body["lines"])
    return (f'{{"lines":[{lines}],"receipt":{_s(body["receipt"])},"source":{_s(body["source"])},'
            f'"total":{_s(body["total"])},"zone":{_s(body["zone"])}}}')

