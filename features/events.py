"""The event contract: read events and customers from CSV, Parquet or SQL, validate, normalise, encode.

Validation happens once, here, where data enters; everything downstream trusts the canonical frame:

=============  ===================================  ============================================
column         canonical dtype                      notes
=============  ===================================  ============================================
customer_id    string                               never null
timestamp      datetime64[ns, UTC]                  naive input is localised from the config zone
event_type     string, in the config's vocabulary   unknown types: error or ``other`` (counted)
channel        string or null                       unknown channels: error or ``other`` (counted)
amount         float64 or NaN                       never negative, never infinite
properties     string (JSON) or null                free-form, carried along untouched
=============  ===================================  ============================================

Every row dropped or altered is counted in a :class:`ValidationSummary`; nothing is lost silently.

The feature code works on :class:`EventArrays`: events as integer codes sorted by customer then time.
One :class:`EventEncoder` makes them from a table (:meth:`EventEncoder.frame`, vectorised pandas) or
from one customer's JSON events (:meth:`EventEncoder.records`, a request's ~50 events in tens of
microseconds), under the same rules, with the same counts and the same words for what is wrong.
Time follows :mod:`funnelcast.features.timestamps`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from funnelcast.features.errors import EventDataError
from funnelcast.features.funnel import OTHER, FunnelConfig
from funnelcast.features.timestamps import column_ns, instant_ns, parse_column, rows_text, stated_ns, zone

__all__ = ["EventArrays", "EventDataError", "EventEncoder", "SqlSource", "ValidationSummary", "parse_source",
           "read_customers", "read_events", "read_table", "validate_customers", "validate_events"]

REQUIRED_EVENT_COLUMNS = ("customer_id", "timestamp", "event_type")
OPTIONAL_EVENT_COLUMNS = ("channel", "amount", "properties")
EVENT_COLUMNS = REQUIRED_EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS
DUPLICATES = "exact duplicate events"
"""The reason under which exact duplicate events are dropped (every field equal; the first is kept)."""
REFUNDS = "Refunds are not purchases; record them as their own event type"


def mapped_to_other(column: str) -> str:
    """The reason under which unknown values of ``column`` are mapped to ``other`` (its prefix, before the listing)."""
    return f"{column} not in config mapped to {OTHER!r}"


@dataclass
class ValidationSummary:
    """What validation did to a source: rows in, rows out, and every row dropped or altered, by reason."""

    source: str
    rows_read: int = 0
    rows_out: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    altered: dict[str, int] = field(default_factory=dict)
    ignored_columns: list[str] = field(default_factory=list)

    def drop(self, reason: str, n: int) -> None:
        """Count ``n`` rows dropped for ``reason``."""
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    def alter(self, reason: str, n: int) -> None:
        """Count ``n`` rows altered for ``reason``."""
        if n:
            self.altered[reason] = self.altered.get(reason, 0) + int(n)

    def count(self, prefix: str) -> int:
        """Rows dropped or altered for every reason that starts with ``prefix`` (e.g. :func:`mapped_to_other`)."""
        return sum(n for reasons in (self.dropped, self.altered) for why, n in reasons.items() if why.startswith(prefix))

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (what ``funnelcast check --json`` prints under ``validation``)."""
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "altered": dict(self.altered),
            "ignored_columns": list(self.ignored_columns),
        }

    def lines(self) -> list[str]:
        """The summary as lines of text, one per reason (what the CLI prints)."""
        out = [f"{self.source}: {self.rows_read:,} rows read, {self.rows_out:,} kept"]
        out += [f"  dropped {n:,}: {why}" for why, n in self.dropped.items()]
        out += [f"  altered {n:,}: {why}" for why, n in self.altered.items()]
        if self.ignored_columns:
            out.append(f"  columns not in the contract, ignored: {', '.join(self.ignored_columns)}")
        return out


# ---- sources -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SqlSource:
    """A table or query in a SQL database named by a SQLAlchemy URL (SQLite, PostgreSQL, ...)."""

    url: str
    table: str | None = None
    query: str | None = None

    def __str__(self) -> str:
        what = f"table {self.table}" if self.table else f"query {self.query!r}"
        return f"{redact_url(self.url)} ({what})"


_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pwd|pass|token|access_token|auth|api_key|apikey|key|secret|signature|sig|sslpassword)=)"
    r"[^&;#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """A URL fit to print: its password (``user:***@``) and the values of query parameters that carry
    secrets (``?password=***``, ``token``, ``api_key``, ``signature``...) are hidden."""
    return _SECRET_QUERY.sub(r"\1***", re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url))



def parse_source(spec: str | Path | SqlSource) -> Path | SqlSource:
    """Turn a CLI source spec into a path or a :class:`SqlSource`.

    SQL sources are URLs with the table or query in the fragment:
    ``sqlite:///events.db#events``, ``postgresql://127.0.0.1/test#table=events``,
    ``postgresql://127.0.0.1/test#query=SELECT * FROM events WHERE ...``.
    """
    if isinstance(spec, (Path, SqlSource)):
        return spec
    if re.match(r"^[a-z][a-z0-9+]*://", spec) and not spec.startswith("file://"):
        url, _, frag = spec.partition("#")
        if not frag:
            raise EventDataError(
                f"SQL source {redact_url(url)!r} names no table or query; append '#TABLE', '#table=TABLE' or '#query=SELECT ...'"
            )
        if frag.startswith("query="):
            return SqlSource(url, query=frag[len("query="):])
        return SqlSource(url, table=frag.removeprefix("table="))
    return Path(spec.removeprefix("file://"))


class RawTable(NamedTuple):
    """A source read as it is: its rows, its name for messages, and what reading it had to fill in."""

    frame: pd.DataFrame
    name: str
    notes: tuple[tuple[str, int], ...] = ()
    """(reason, rows) for every value the reader supplied: a column missing from one file of a folder."""


def read_table(spec: str | Path | SqlSource) -> RawTable:
    """Read a CSV file, a Parquet file or directory, or a SQL table/query, as raw strings/values.

    A folder of Parquet files whose files differ in columns is read as the union of their columns: a
    column one file lacks is missing for that file's rows, and each such file is counted in
    :attr:`RawTable.notes` (validation reports them as altered rows). Files that disagree on a column's
    type are refused, naming the files and the column."""
    source = parse_source(spec)
    if isinstance(source, SqlSource):
        return RawTable(_read_sql(source), str(source))
    name = str(source)
    if not source.exists():
        raise EventDataError(f"{name}: no such file or directory")
    try:
        if source.is_dir():
            return _read_parquet_folder(source)
        if source.suffix.lower() in (".parquet", ".pq"):
            return RawTable(pd.read_parquet(source), name)
        if source.suffix.lower() in (".csv", ".gz", ".txt"):
            # Everything as text: validation below parses each column and names what fails.
            return RawTable(pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""]), name)
    except EventDataError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise EventDataError(f"{name}: could not be read: {exc}") from None
    raise EventDataError(f"{name}: unknown file type {source.suffix!r}; use .csv, .parquet or a directory of Parquet files")


def _read_parquet_folder(folder: Path) -> RawTable:
    """Every Parquet file below ``folder`` (hive partition folders give their columns), unified by column."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    name = str(folder)
    fragments = sorted(ds.dataset(folder, format="parquet", partitioning="hive").get_fragments(), key=lambda f: f.path)
    if not fragments:
        raise EventDataError(f"{name}: the folder holds no Parquet files")

    def plain(t: pa.DataType) -> pa.DataType:  # a categorical column is its values' type
        return t.value_type if pa.types.is_dictionary(t) else t

    schemas = {f.path: {field.name: plain(field.type) for field in f.physical_schema} for f in fragments}
    if all(s == next(iter(schemas.values())) for s in schemas.values()):
        return RawTable(pd.read_parquet(folder), name)  # one layout: pandas reads the folder as a whole
    types: dict[str, dict[pa.DataType, list[str]]] = {}
    for path, schema in schemas.items():
        for column, kind in schema.items():
            types.setdefault(column, {}).setdefault(kind, []).append(Path(path).name)
    clash = {column: kinds for column, kinds in types.items() if len(kinds) > 1 and not all(
        pa.types.is_string(k) or pa.types.is_large_string(k) for k in kinds)}
    if clash:
        column, kinds = next(iter(clash.items()))
        listing = "; ".join(f"{kind} in {', '.join(files[:3])}" for kind, files in kinds.items())
        raise EventDataError(f"{name}: the files disagree on column {column!r}: {listing}. Write every file with one "
                             "type per column")
    frames, notes, columns = [], [], list(types)
    for fragment in fragments:
        frame = fragment.to_table().to_pandas()
        for key, value in ds.get_partition_keys(fragment.partition_expression).items():
            frame[key] = value
        lacking = [c for c in columns if c not in frame.columns]
        for column in lacking:
            notes.append((f"{Path(fragment.path).relative_to(folder)} has no column {column!r}: its rows read with "
                          f"{column} missing", len(frame)))
        frames.append(frame)
    return RawTable(pd.concat(frames, ignore_index=True), name, tuple(notes))


def _read_sql(source: SqlSource) -> pd.DataFrame:
    import sqlalchemy as sa

    try:
        url = sa.engine.make_url(source.url)
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise EventDataError(f"{source}: not a usable database URL: {exc}") from None
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not Path(url.database).is_file():
        # SQLite would create an empty database file to read from: reading never creates a store.
        raise EventDataError(f"{source}: no such database file {url.database}")
    try:
        with engine.connect() as conn:
            if source.table is not None:
                if not sa.inspect(conn).has_table(source.table):
                    raise EventDataError(f"{source}: the database has no table {source.table!r}")
                return pd.read_sql_table(source.table, conn)
            return pd.read_sql_query(sa.text(source.query), conn)
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        raise EventDataError(f"{source}: the database refused the read: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()



# ---- validation --------------------------------------------------------------------------------

def _missing_columns(frame: pd.DataFrame, required: tuple[str, ...], name: str, what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise EventDataError(
            f"{name}: {what} lack required column(s) {missing}; found columns {list(frame.columns)}. "
            f"Required: {list(required)}."
        )


def _ids(raw: pd.Series, name: str, what: str) -> pd.Series:
    ids = raw.astype("string").str.strip()
    bad = ids.isna() | (ids == "")
    if bad.any():
        raise EventDataError(f"{name}: {what} has {int(bad.sum()):,} null or empty customer_id values: {rows_text(bad)}")
    return ids


def _unknown_advice(policy_field: str) -> str:
    return f"add them to the funnel config, or set {policy_field}: map_to_other"


def _listing(counts: pd.Series) -> str:
    """``'x' (3 rows), 'y' (1 rows)``: the ten most frequent unknown values, as every message lists them."""
    return ", ".join(f"{v!r} ({n:,} rows)" for v, n in counts.head(10).items())


def _vocabulary(
    raw: pd.Series, known: tuple[str, ...], policy: str, policy_field: str, name: str, column: str, summary: ValidationSummary
) -> pd.Series:
    values = raw.astype("string").str.strip()
    unknown = values.notna() & ~values.isin(known)
    if unknown.any():
        counts = values[unknown].value_counts()
        listing = _listing(counts)
        if policy == "error":
            raise EventDataError(
                f"{name}: column {column!r} has values the funnel config does not know: {listing}"
                f"{' and more' if len(counts) > 10 else ''}; first at {rows_text(unknown, raw)}. "
                f"{_unknown_advice(policy_field).capitalize()}"
            )
        values = values.mask(unknown, OTHER)
        summary.alter(f"{mapped_to_other(column)} ({listing})", int(unknown.sum()))
    return values


def validate_events(
    raw: pd.DataFrame, config: FunnelConfig, source: str = "events", as_of: Any = None,
    notes: Sequence[tuple[str, int]] = (),
) -> tuple[pd.DataFrame, ValidationSummary]:
    """Validate raw events against the contract and return the canonical frame, sorted by customer then time.

    ``as_of`` is when the data was extracted (a stated time: naive means the config's
    ``source_timezone``, else UTC): an event at or after it cannot have happened yet and is an
    error. Exact duplicate events are dropped and counted. ``notes`` (from :func:`read_table`) are
    counted as altered rows.
    """
    summary = ValidationSummary(source=source, rows_read=len(raw))
    for reason, n in notes:
        summary.alter(reason, n)
    _missing_columns(raw, REQUIRED_EVENT_COLUMNS, source, "events")
    raw = raw.reset_index(drop=True)
    summary.ignored_columns = [c for c in raw.columns if c not in EVENT_COLUMNS]

    out = pd.DataFrame(index=raw.index)
    out["customer_id"] = _ids(raw["customer_id"], source, "events")
    nulls = raw["event_type"].isna()
    if nulls.any():
        raise EventDataError(f"{source}: column 'event_type' has {int(nulls.sum()):,} null values: {rows_text(nulls)}")
    out["timestamp"] = parse_column(raw["timestamp"], config.source_timezone, source)
    out["event_type"] = _vocabulary(
        raw["event_type"], config.event_types, config.unknown_event_types, "unknown_event_types", source, "event_type", summary
    )
    if "channel" in raw.columns:
        out["channel"] = _vocabulary(
            raw["channel"], config.channel_names, config.unknown_channels, "unknown_channels", source, "channel", summary
        )
    else:
        out["channel"] = pd.Series(pd.NA, index=raw.index, dtype="string")
    out["amount"] = _amounts(raw, source)
    if "properties" in raw.columns:
        out["properties"] = raw["properties"].map(_properties_text).astype("string")
    else:
        out["properties"] = pd.Series(pd.NA, index=raw.index, dtype="string")

    if as_of is not None:
        t = stated_ns(as_of, config.source_timezone, "as_of")
        late = column_ns(out["timestamp"]) >= t
        if late.any():
            raise EventDataError(
                f"{source}: {int(late.sum()):,} events are at or after the run's as-of time "
                f"{pd.Timestamp(t, tz='UTC').isoformat()}: {rows_text(late, raw['timestamp'])}. Events cannot come "
                "from the future: fix the source's clock, filter the extract, or pass a later --as-of"
            )

    duplicated = out.duplicated(keep="first")
    summary.drop(DUPLICATES, int(duplicated.sum()))
    out = out[~duplicated.to_numpy()]
    out = out.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    summary.rows_out = len(out)
    return out, summary


def _properties_text(value: Any) -> Any:
    """Free-form properties as JSON text; nulls stay null."""
    if value is None or isinstance(value, str):
        return value
    if pd.api.types.is_scalar(value) and pd.isna(value):
        return pd.NA
    return json.dumps(value, sort_keys=True, default=str)


def _amounts(raw: pd.DataFrame, source: str) -> pd.Series:
    if "amount" not in raw.columns:
        return pd.Series(np.nan, index=raw.index, dtype="float64")
    text = raw["amount"]
    amount = pd.to_numeric(text, errors="coerce").astype("float64")
    unparseable = amount.isna() & text.notna()
    if unparseable.any():
        raise EventDataError(f"{source}: column 'amount' has {int(unparseable.sum()):,} non-numeric values: {rows_text(unparseable, text)}")
    negative = amount < 0
    if negative.any():
        raise EventDataError(
            f"{source}: column 'amount' has {int(negative.sum()):,} negative purchase amounts: {rows_text(negative, text)}. {REFUNDS}"
        )
    infinite = np.isinf(amount)
    if infinite.any():
        raise EventDataError(f"{source}: column 'amount' has {int(infinite.sum()):,} infinite values: {rows_text(infinite, text)}")
    return amount


def validate_customers(raw: pd.DataFrame, config: FunnelConfig, source: str = "customers",
                       notes: Sequence[tuple[str, int]] = ()) -> tuple[pd.DataFrame, ValidationSummary]:
    """Validate a customers table: unique, non-null ``customer_id`` plus static attributes.

    Text attributes become categoricals; date-like attribute columns (datetime dtype, or text whose
    name ends in ``_date``/``_at``) are parsed to UTC like event timestamps; numbers (and booleans)
    become float64. A model records each attribute's kind when it is trained
    (:class:`~funnelcast.features.model_input.ModelInput`) and never guesses it again.
    """
    summary = ValidationSummary(source=source, rows_read=len(raw))
    for reason, n in notes:
        summary.alter(reason, n)
    _missing_columns(raw, ("customer_id",), source, "customers")
    raw = raw.reset_index(drop=True)
    out = pd.DataFrame({"customer_id": _ids(raw["customer_id"], source, "customers")})
    repeated = out["customer_id"].duplicated(keep=False)
    if repeated.any():
        raise EventDataError(
            f"{source}: customer_id must be unique, but {int(repeated.sum()):,} rows share ids: {rows_text(repeated, out['customer_id'])}"
        )
    for col in raw.columns:
        if col == "customer_id":
            continue
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(col)):
            raise EventDataError(f"{source}: attribute column {col!r} is not a usable name (letters, digits, underscores)")
        values = raw[col]
        if pd.api.types.is_datetime64_any_dtype(values.dtype) or (
            str(col).endswith(("_date", "_at")) and not pd.api.types.is_numeric_dtype(values.dtype)
        ):
            out[col] = parse_column(values, config.source_timezone, source, column=col, allow_null=True)
        elif pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_numeric_dtype(values.dtype):
            out[col] = values.astype("float64")
        else:
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.notna().sum() == values.notna().sum() and values.notna().any():
                out[col] = numeric.astype("float64")
            else:
                out[col] = values.astype("string").astype("category")
    summary.rows_out = len(out)
    return out.sort_values("customer_id", kind="stable").reset_index(drop=True), summary


def frames_hash(*frames: pd.DataFrame | None) -> str:
    """SHA-256 over the rows of validated frames (values and column names, not their memory layout):
    the same data gives the same hash in any process."""
    digest = hashlib.sha256()
    for frame in frames:
        if frame is None:
            continue
        digest.update(json.dumps([str(c) for c in frame.columns]).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def validate_source(raw: pd.DataFrame, config: FunnelConfig, source: str = "events", as_of: Any = None,
                    notes: Sequence[tuple[str, int]] = ()) -> tuple[pd.DataFrame, ValidationSummary]:
    """A raw table as the funnel's canonical events: :func:`validate_events`, or, where the config has
    an ``order_log`` section, :func:`funnelcast.features.orders.validate_orders` (a transaction log)."""
    if config.order_log is not None:
        from funnelcast.features.orders import validate_orders  # orders builds on this module

        return validate_orders(raw, config, source=source, as_of=as_of, notes=notes)
    return validate_events(raw, config, source=source, as_of=as_of, notes=notes)


def read_events(
    spec: str | Path | SqlSource, config: FunnelConfig, as_of: Any = None
) -> tuple[pd.DataFrame, ValidationSummary]:
    """Read and validate events from any supported source (see :func:`parse_source`); an order log
    where the config says so (:func:`validate_source`)."""
    raw = read_table(spec)
    return validate_source(raw.frame, config, source=raw.name, as_of=as_of, notes=raw.notes)


def read_customers(spec: str | Path | SqlSource, config: FunnelConfig) -> tuple[pd.DataFrame, ValidationSummary]:
    """Read and validate a customers table from any supported source."""
    raw = read_table(spec)
    return validate_customers(raw.frame, config, source=raw.name, notes=raw.notes)


# ---- encoded events ------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class EventArrays:
    """Events as integer-coded arrays sorted by customer then time; ``starts`` delimits each customer."""

    customer_ids: np.ndarray  # (C,) ids in code order
    starts: np.ndarray  # (C+1,) int64 offsets into the event arrays
    customer: np.ndarray  # (N,) int64 codes, non-decreasing
    ts: np.ndarray  # (N,) int64 ns since epoch, UTC; non-decreasing within a customer
    event_type: np.ndarray  # (N,) int64 codes into config.event_types
    channel: np.ndarray  # (N,) int64 codes into config.channel_names; len(channels) = missing
    amount: np.ndarray  # (N,) float64, NaN where absent

    @property
    def n_customers(self) -> int:
        """Customers on the customer axis (C)."""
        return len(self.customer_ids)

    @classmethod
    def from_frame(cls, events: pd.DataFrame, config: FunnelConfig, customer_ids: Any = None) -> EventArrays:
        """Encode a canonical (validated) event frame.

        ``customer_ids`` fixes the customer axis (customers without events get empty segments);
        by default it is the sorted distinct ids of ``events``. Events of customers not listed are
        not encoded.
        """
        ids = np.asarray(events["customer_id"].to_numpy(dtype=object))
        if customer_ids is None:
            universe = np.unique(ids)
        else:
            universe = np.unique(np.asarray(customer_ids, dtype=object))
        codes = pd.Index(universe).get_indexer(ids).astype(np.int64)  # -1: not on the customer axis
        ts = column_ns(events["timestamp"])
        etype = pd.Categorical(events["event_type"], categories=list(config.event_types)).codes.astype(np.int64)
        if (etype < 0).any():
            bad = pd.unique(events["event_type"][etype < 0])[:5]
            raise EventDataError(f"event types {list(bad)} are not in the funnel config; validate events first")
        channels = list(config.channel_names)
        if "channel" in events.columns:
            ch = pd.Categorical(events["channel"], categories=channels).codes.astype(np.int64)
            ch[ch < 0] = len(channels)
        else:
            ch = np.full(len(events), len(channels), dtype=np.int64)
        amount = events["amount"].to_numpy(dtype=np.float64, na_value=np.nan) if "amount" in events.columns else np.full(len(events), np.nan)
        keep = codes >= 0
        order = np.lexsort((ts, codes))
        order = order[keep[order]]
        codes = codes[order]
        return cls(
            customer_ids=universe,
            starts=np.searchsorted(codes, np.arange(len(universe) + 1)).astype(np.int64),
            customer=codes,
            ts=ts[order],
            event_type=etype[order],
            channel=ch[order],
            amount=amount[order],
        )

    def customers_slice(self, c0: int, c1: int) -> EventArrays:
        """The events of customers ``c0 <= code < c1``, recoded from 0."""
        a, b = self.starts[c0], self.starts[c1]
        return EventArrays(
            customer_ids=self.customer_ids[c0:c1],
            starts=self.starts[c0 : c1 + 1] - a,
            customer=self.customer[a:b] - c0,
            ts=self.ts[a:b],
            event_type=self.event_type[a:b],
            channel=self.channel[a:b],
            amount=self.amount[a:b],
        )

    def subset(self, codes: np.ndarray) -> EventArrays:
        """The events of the customers ``codes`` (distinct, any order), recoded 0..len(codes)-1 in that order."""
        starts, ends = self.starts[codes], self.starts[codes + 1]
        lengths = ends - starts
        new_starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        total = int(new_starts[-1])
        idx = np.repeat(starts - new_starts[:-1], lengths) + np.arange(total)
        return EventArrays(
            customer_ids=self.customer_ids[codes], starts=new_starts,
            customer=np.repeat(np.arange(len(codes), dtype=np.int64), lengths),
            ts=self.ts[idx], event_type=self.event_type[idx], channel=self.channel[idx], amount=self.amount[idx],
        )


class EventEncoder:
    """Events of one funnel config as :class:`EventArrays` plus a :class:`ValidationSummary`.

    :meth:`frame` takes a table (a raw frame, or a source: file, folder or SQL) through
    :func:`validate_events`; :meth:`records` takes one customer's events as JSON-like mappings (an HTTP
    request) under the same rules: the same required fields, time rule, vocabularies and unknown-value
    policies, amount checks and duplicate handling, counted under the same reasons.
    """

    def __init__(self, config: FunnelConfig) -> None:
        self.config = config
        self.tz = zone(config.source_timezone)
        self._type_code = {t: i for i, t in enumerate(config.event_types)}
        self._channel_code = {c: i for i, c in enumerate(config.channel_names)}
        self._no_channel = len(config.channel_names)

    def frame(self, events: pd.DataFrame | str | Path | SqlSource, *, as_of: Any = None,
              customer_ids: Any = None, source: str = "events") -> tuple[EventArrays, ValidationSummary]:
        """A table of events (raw frame or source spec) validated and encoded; ``customer_ids`` fixes
        the customer axis (see :meth:`EventArrays.from_frame`), ``as_of`` is the extraction time."""
        if isinstance(events, pd.DataFrame):
            canonical, summary = validate_source(events, self.config, source=source, as_of=as_of)
        else:
            canonical, summary = read_events(events, self.config, as_of=as_of)
        return EventArrays.from_frame(canonical, self.config, customer_ids), summary

    def records(self, events: Sequence[Mapping[str, Any]], customer_id: str | None = None,
                source: str = "events") -> tuple[EventArrays, ValidationSummary]:
        """One customer's events from JSON-like mappings (``timestamp``, ``event_type``, optional
        ``channel``, ``amount``, ``properties``, ``customer_id``), as :meth:`frame` would encode them.

        Problems raise :class:`EventDataError` naming the event (``events[3].amount``). Column by
        column, list comprehensions over C-level look-ups and numpy after that: ~50 events cost tens
        of microseconds.
        """
        summary = ValidationSummary(source=source, rows_read=len(events))
        ids = {i for e in events if (i := e.get("customer_id")) is not None}
        types = [e.get("event_type") for e in events]
        if None in types:
            raise EventDataError(f"events[{types.index(None)}].event_type is missing; every event needs one")
        try:
            ts = [instant_ns(e["timestamp"], self.tz, "") for e in events]
        except (EventDataError, KeyError):  # again, one by one, for a message that names the event
            ts = [self._timestamp(e.get("timestamp"), i) for i, e in enumerate(events)]
        if customer_id is not None:
            ids.add(customer_id)
        if len(ids) > 1:
            raise EventDataError(f"the events name more than one customer ({sorted(map(str, ids))[:5]}); "
                                 "send one customer per request")
        cfg = self.config
        code = self._codes(types, self._type_code, "event_type", cfg.unknown_event_types, "unknown_event_types",
                           cfg.event_types, summary)
        ch = self._codes([e.get("channel") for e in events], self._channel_code, "channel", cfg.unknown_channels,
                         "unknown_channels", cfg.channel_names, summary, missing=self._no_channel)
        amounts = [e.get("amount") for e in events]
        props = [e.get("properties") for e in events]
        props = [json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list)) else v for v in props]
        # Exact duplicates (every field equal) are dropped; the first of each stays, in request order.
        unique = list(dict.fromkeys(zip(ts, code, ch, amounts, props, strict=True)))
        summary.drop(DUPLICATES, len(events) - len(unique))
        n = summary.rows_out = len(unique)
        cols = list(zip(*unique, strict=True)) if n else [(), (), (), ()]
        ts_arr = np.array(cols[0], dtype=np.int64)
        order = np.argsort(ts_arr, kind="stable")
        arrays = EventArrays(
            customer_ids=np.array([ids.pop() if ids else ""], dtype=object), starts=np.array([0, n], dtype=np.int64),
            customer=np.zeros(n, dtype=np.int64), ts=ts_arr[order],
            event_type=np.array(cols[1], dtype=np.int64)[order], channel=np.array(cols[2], dtype=np.int64)[order],
            amount=self._amounts(cols[3])[order],
        )
        return arrays, summary

    def _timestamp(self, value: Any, i: int) -> int:
        if value is None:
            raise EventDataError(f"events[{i}].timestamp is missing; every event needs one")
        return instant_ns(value, self.tz, f"events[{i}].timestamp")

    @staticmethod
    def _codes(values: list[Any], codes: dict[str, int], column: str, policy: str, policy_field: str,
               known: Sequence[str], summary: ValidationSummary, missing: int | None = None) -> list[int]:
        """Codes of a request's event types or channels (``missing`` for a None where one is allowed);
        unknown values by the config's policy, as :func:`_vocabulary` does for a table."""
        out = [missing if v is None and missing is not None else codes.get(v, -1) for v in values]
        if -1 not in out:
            return out
        unknown = [i for i, c in enumerate(out) if c < 0]
        if policy == "error":
            i = unknown[0]
            raise EventDataError(f"events[{i}].{column} {values[i]!r} is not in the funnel config (known: "
                                 f"{', '.join(known)}): {_unknown_advice(policy_field)}")
        counts = pd.Series([values[i] for i in unknown]).astype(str).value_counts()
        listing = _listing(counts)
        summary.alter(f"{mapped_to_other(column)} ({listing})", len(unknown))
        other = codes[OTHER]
        for i in unknown:
            out[i] = other
        return out

    @staticmethod
    def _amounts(values: Sequence[Any]) -> np.ndarray:
        """Amounts as float64 (None: NaN), refused as a table's would be: non-numeric, negative, infinite."""
        try:
            amount = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
            fine = not ((amount < 0).any() or np.isinf(amount).any() or any(isinstance(v, str) for v in values))
        except (TypeError, ValueError):
            fine = False
        if not fine:  # the slow path names the first bad event
            for i, v in enumerate(values):
                if v is None:
                    continue
                try:
                    x = float(v)
                except (TypeError, ValueError):
                    x = None
                if x is None or isinstance(v, str) and x != x:
                    raise EventDataError(f"events[{i}].amount {v!r} is not a number")
                if x < 0:
                    raise EventDataError(f"events[{i}].amount {v!r} is a negative purchase amount. {REFUNDS}")
                if np.isinf(x):
                    raise EventDataError(f"events[{i}].amount {v!r} is infinite")
            amount = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
        return amount
