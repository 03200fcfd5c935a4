"""The event contract: read events and customers from CSV, Parquet or SQL, validate, normalise.

Validation happens once, here, where data enters; everything downstream trusts the canonical frame:

=============  ===================================  ============================================
column         canonical dtype                      notes
=============  ===================================  ============================================
customer_id    string                               never null
timestamp      datetime64[ns, UTC]                  naive input is localised from the config zone
event_type     string, in the config's vocabulary   unknown types: error or ``other`` (counted)
channel        string or null                       unknown channels: error or ``other`` (counted)
amount         float64 or NaN                       never negative
properties     string (JSON) or null                free-form, carried along untouched
=============  ===================================  ============================================

Every row dropped or altered is counted in a :class:`ValidationSummary`; nothing is lost silently.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from funnelcast.features.funnel import OTHER, FunnelConfig

REQUIRED_EVENT_COLUMNS = ("customer_id", "timestamp", "event_type")
OPTIONAL_EVENT_COLUMNS = ("channel", "amount", "properties")
EVENT_COLUMNS = REQUIRED_EVENT_COLUMNS + OPTIONAL_EVENT_COLUMNS
_SAMPLE = 5
# An offset only counts after a time of day: "2024-01-15" is a naive date, not "-15" hours.
_TZ_SUFFIX = re.compile(r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)


class EventDataError(ValueError):
    """Input data that breaks the event contract; the message names source, column, rows and values."""


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
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)

    def alter(self, reason: str, n: int) -> None:
        if n:
            self.altered[reason] = self.altered.get(reason, 0) + int(n)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_out": self.rows_out,
            "dropped": dict(self.dropped),
            "altered": dict(self.altered),
            "ignored_columns": list(self.ignored_columns),
        }

    def lines(self) -> list[str]:
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
        return f"{_redact(self.url)} ({what})"


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


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
                f"SQL source {_redact(url)!r} names no table or query; append '#TABLE', '#table=TABLE' or '#query=SELECT ...'"
            )
        if frag.startswith("query="):
            return SqlSource(url, query=frag[len("query="):])
        return SqlSource(url, table=frag.removeprefix("table="))
    return Path(spec.removeprefix("file://"))


def read_table(spec: str | Path | SqlSource) -> tuple[pd.DataFrame, str]:
    """Read a CSV file, a Parquet file or directory, or a SQL table/query, as raw strings/values."""
    source = parse_source(spec)
    if isinstance(source, SqlSource):
        return _read_sql(source), str(source)
    name = str(source)
    if not source.exists():
        raise EventDataError(f"{name}: no such file or directory")
    try:
        if source.is_dir() or source.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(source), name
        if source.suffix.lower() in (".csv", ".gz", ".txt"):
            # Everything as text: validation below parses each column and names what fails.
            return pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""]), name
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise EventDataError(f"{name}: could not be read: {exc}") from None
    raise EventDataError(f"{name}: unknown file type {source.suffix!r}; use .csv, .parquet or a directory of Parquet files")


def _read_sql(source: SqlSource) -> pd.DataFrame:
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(source.url)
    except (sa.exc.ArgumentError, ImportError) as exc:
        raise EventDataError(f"{source}: not a usable database URL: {exc}") from None
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

def _rows(mask: np.ndarray | pd.Series, values: pd.Series | None = None) -> str:
    """'row 3: 'x', row 9: 'y' (and 12 more)' — 1-based data rows, header excluded."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = []
    for i in idx[:_SAMPLE]:
        value = values.iloc[i] if values is not None else None
        value = value.item() if isinstance(value, np.generic) else value  # 'inf', not 'np.float64(inf)'
        shown.append(f"row {i + 1}" + (f": {value!r}" if values is not None else ""))
    more = f" (and {len(idx) - _SAMPLE:,} more)" if len(idx) > _SAMPLE else ""
    return ", ".join(shown) + more


def _missing_columns(frame: pd.DataFrame, required: tuple[str, ...], name: str, what: str) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise EventDataError(
            f"{name}: {what} lack required column(s) {missing}; found columns {list(frame.columns)}. "
            f"Required: {list(required)}."
        )


def _parse_timestamps(
    raw: pd.Series, config: FunnelConfig, name: str, column: str = "timestamp", allow_null: bool = False
) -> pd.Series:
    """Parse to datetime64[ns, UTC]; naive values are local time in ``config.source_timezone``.

    Nulls are errors unless ``allow_null`` (optional attribute columns), where they stay NaT.
    """
    zone = config.source_timezone
    index = raw.index
    if len(raw) == 0 or (allow_null and raw.isna().all()):  # nothing to parse, whatever dtype it came as
        return pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = raw.dt.tz_convert("UTC")
        bad = parsed.isna()
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        if zone is None:
            raise EventDataError(
                f"{name}: column {column!r} holds timestamps without a time zone and the config declares no "
                "source_timezone; set source_timezone (e.g. 'UTC') in the funnel config or add offsets to the data"
            )
        parsed = raw.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        bad = parsed.isna()
    elif pd.api.types.is_numeric_dtype(raw.dtype):
        raise EventDataError(
            f"{name}: column {column!r} is numeric ({raw.dtype}); timestamps must be ISO 8601 text or date-time values"
        )
    else:
        text = raw.astype("string").str.strip()
        has_zone = text.str.contains(_TZ_SUFFIX, na=False)
        parsed = pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
        if has_zone.any():
            parsed[has_zone] = _in_range(pd.to_datetime(text[has_zone], errors="coerce", utc=True, format="ISO8601"), raw, name, column)
        naive = ~has_zone & text.notna()
        if naive.any():
            local = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
            unparseable = pd.Series(False, index=index)
            unparseable[naive] = local.isna()
            if unparseable.any():  # before the zone check: an unparseable value is the first thing to fix
                raise EventDataError(
                    f"{name}: column {column!r} has {int(unparseable.sum()):,} unparseable timestamps: "
                    f"{_rows(unparseable, raw)}. Expected ISO 8601 such as '2024-05-01T10:00:00Z'"
                )
            if zone is None:
                raise EventDataError(
                    f"{name}: column {column!r} has {int(naive.sum()):,} timestamps without a time zone "
                    f"({_rows(naive, raw)}) and the config declares no source_timezone; set source_timezone "
                    "(e.g. 'UTC') in the funnel config or write timestamps with an offset ('2024-05-01T10:00:00Z')"
                )
            parsed[naive] = _in_range(
                local.dt.tz_localize(zone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"), raw, name, column
            )
        bad = parsed.isna()
    if allow_null:
        bad = bad & raw.notna()
    if bad.any():
        raise EventDataError(
            f"{name}: column {column!r} has {int(bad.sum()):,} missing or unparseable timestamps: {_rows(bad, raw)}. "
            "Expected ISO 8601 such as '2024-05-01T10:00:00Z' (times that do not exist or are ambiguous in "
            f"{zone or 'the source zone'} also land here)"
        )
    return parsed.astype("datetime64[ns, UTC]")


def _in_range(parsed: pd.Series, raw: pd.Series, name: str, column: str) -> pd.Series:
    """Refuse timestamps outside what nanosecond precision holds (years 1678 to 2261)."""
    lo, hi = pd.Timestamp("1678-01-01", tz="UTC"), pd.Timestamp("2261-12-31", tz="UTC")
    outside = pd.Series(False, index=raw.index)
    outside[parsed.index] = ((parsed < lo) | (parsed > hi)).fillna(False).to_numpy()
    if outside.any():
        raise EventDataError(
            f"{name}: column {column!r} has {int(outside.sum()):,} timestamps outside the years 1678-2261: {_rows(outside, raw)}"
        )
    return parsed.astype("datetime64[ns, UTC]")


def _ids(raw: pd.Series, name: str, what: str) -> pd.Series:
    ids = raw.astype("string").str.strip()
    bad = ids.isna() | (ids == "")
    if bad.any():
        raise EventDataError(f"{name}: {what} has {int(bad.sum()):,} null or empty customer_id values: {_rows(bad)}")
    return ids


def _vocabulary(
    raw: pd.Series, known: tuple[str, ...], policy: str, policy_field: str, name: str, column: str, summary: ValidationSummary
) -> pd.Series:
    values = raw.astype("string").str.strip()
    unknown = values.notna() & ~values.isin(known)
    if unknown.any():
        counts = values[unknown].value_counts()
        listing = ", ".join(f"{v!r} ({n:,} rows)" for v, n in counts.head(10).items())
        if policy == "error":
            raise EventDataError(
                f"{name}: column {column!r} has values the funnel config does not know: {listing}"
                f"{' and more' if len(counts) > 10 else ''}; first at {_rows(unknown, raw)}. "
                f"Add them to the config, or set {policy_field}: map_to_other"
            )
        values = values.mask(unknown, OTHER)
        summary.alter(f"{column} not in config mapped to {OTHER!r} ({listing})", int(unknown.sum()))
    return values


def validate_events(
    raw: pd.DataFrame, config: FunnelConfig, source: str = "events", as_of: pd.Timestamp | None = None
) -> tuple[pd.DataFrame, ValidationSummary]:
    """Validate raw events against the contract and return the canonical frame, sorted by customer then time.

    ``as_of`` is when the data was extracted: an event at or after it cannot have happened yet and is an
    error. Exact duplicate events are dropped and counted.
    """
    summary = ValidationSummary(source=source, rows_read=len(raw))
    _missing_columns(raw, REQUIRED_EVENT_COLUMNS, source, "events")
    raw = raw.reset_index(drop=True)
    summary.ignored_columns = [c for c in raw.columns if c not in EVENT_COLUMNS]

    out = pd.DataFrame(index=raw.index)
    out["customer_id"] = _ids(raw["customer_id"], source, "events")
    nulls = raw["event_type"].isna()
    if nulls.any():
        raise EventDataError(f"{source}: column 'event_type' has {int(nulls.sum()):,} null values: {_rows(nulls)}")
    out["timestamp"] = _parse_timestamps(raw["timestamp"], config, source)
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
        as_of = to_utc(as_of)
        late = out["timestamp"] >= as_of
        if late.any():
            raise EventDataError(
                f"{source}: {int(late.sum()):,} events are at or after the run's as-of time {as_of.isoformat()}: "
                f"{_rows(late, raw['timestamp'])}. Events cannot come from the future: fix the source's clock, "
                "filter the extract, or pass a later --as-of"
            )

    duplicated = out.duplicated(keep="first")
    summary.drop("exact duplicate events", int(duplicated.sum()))
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
        raise EventDataError(f"{source}: column 'amount' has {int(unparseable.sum()):,} non-numeric values: {_rows(unparseable, text)}")
    negative = amount < 0
    if negative.any():
        raise EventDataError(
            f"{source}: column 'amount' has {int(negative.sum()):,} negative purchase amounts: {_rows(negative, text)}. "
            "Refunds are not purchases; record them as their own event type"
        )
    infinite = np.isinf(amount)
    if infinite.any():
        raise EventDataError(f"{source}: column 'amount' has {int(infinite.sum()):,} infinite values: {_rows(infinite, text)}")
    return amount


def validate_customers(raw: pd.DataFrame, config: FunnelConfig, source: str = "customers") -> tuple[pd.DataFrame, ValidationSummary]:
    """Validate a customers table: unique, non-null ``customer_id`` plus static attributes.

    Text attributes become categoricals; date-like attribute columns (datetime dtype, or text whose
    name ends in ``_date``/``_at``) are parsed to UTC like event timestamps.
    """
    summary = ValidationSummary(source=source, rows_read=len(raw))
    _missing_columns(raw, ("customer_id",), source, "customers")
    raw = raw.reset_index(drop=True)
    out = pd.DataFrame({"customer_id": _ids(raw["customer_id"], source, "customers")})
    repeated = out["customer_id"].duplicated(keep=False)
    if repeated.any():
        raise EventDataError(
            f"{source}: customer_id must be unique, but {int(repeated.sum()):,} rows share ids: {_rows(repeated, out['customer_id'])}"
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
            out[col] = _parse_timestamps(values, config, source, column=col, allow_null=True)
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


def to_utc(value: Any) -> pd.Timestamp:
    """A date or timestamp as a UTC ``Timestamp``; naive values are taken to be UTC already."""
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_events(
    spec: str | Path | SqlSource, config: FunnelConfig, as_of: Any = None
) -> tuple[pd.DataFrame, ValidationSummary]:
    """Read and validate events from any supported source (see :func:`parse_source`)."""
    raw, name = read_table(spec)
    return validate_events(raw, config, source=name, as_of=None if as_of is None else to_utc(as_of))


def read_customers(spec: str | Path | SqlSource, config: FunnelConfig) -> tuple[pd.DataFrame, ValidationSummary]:
    raw, name = read_table(spec)
    return validate_customers(raw, config, source=name)
