"""Time in funnelcast: one rule for naive values, one supported range, one place that parses.

Everything inside funnelcast is a UTC instant: ``datetime64[ns, UTC]`` in frames, int64 nanoseconds
since the epoch in arrays. Values come in as text, dates or datetimes, some with an offset and some
without, and there are two kinds of them:

* **Data** — event timestamps and date attributes, from a file, a database or a request. A naive value
  is local time in the funnel config's ``source_timezone``; with no ``source_timezone`` it is refused
  (a guess would shift every event by the data's offset).
* **Stated times** — ``--as-of``, ``--cutoff``, ``--data-end``, a request's ``as_of``, the ``cutoff``
  of :func:`~funnelcast.features.behaviour.build_features`. A naive value is read in the config's
  ``source_timezone`` too, and in UTC when the config declares none (a date such as ``2025-06-30``
  then means midnight UTC).

Both are checked against one range: from 1678-01-01 to 2262-01-01 (exclusive) UTC, what nanosecond
precision holds. Snapshot cutoffs are midnight UTC on the config's grid, whatever the zone.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import zoneinfo
from typing import Any

import numpy as np
import pandas as pd

from funnelcast.features.errors import EventDataError

DAY_NS = 86_400 * 10**9
FIRST = pd.Timestamp("1678-01-01", tz="UTC")
"""The earliest supported instant."""
END = pd.Timestamp("2262-01-01", tz="UTC")
"""The first instant past the supported range."""
_FIRST_NS, _END_NS = FIRST.value, END.value
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)
_SAMPLE = 5
# An offset only counts after a time of day: "2024-01-15" is a naive date, not "-15" hours.
_TZ_SUFFIX = re.compile(r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$", re.IGNORECASE)
RANGE_TEXT = "the years 1678-2261"
_SUB_MICROSECOND = re.compile(r"\d:\d{2}:\d{2}[.]\d{6}(\d{1,3})")


@functools.lru_cache(maxsize=64)
def zone(name: str | None) -> dt.tzinfo | None:
    """The ``tzinfo`` of an IANA zone name (cached); ``None`` for ``None``."""
    return None if name is None else zoneinfo.ZoneInfo(name)


def naive_refused(subject: str, detail: str = "") -> str:
    """The message for naive data under a config without ``source_timezone`` (every path says the same)."""
    return (f"{subject} without a time zone{detail} and the config declares no source_timezone; set source_timezone "
            "(e.g. 'UTC') in the funnel config or give timestamps an offset ('2024-05-01T10:00:00Z')")


# ---- scalars -------------------------------------------------------------------------------------

def instant_ns(value: Any, tz: dt.tzinfo | None, where: str) -> int:
    """One value as int64 ns since the epoch (UTC): an ISO 8601 string, a date or a datetime.

    A naive value is read in ``tz``; with ``tz=None`` it is refused (the data rule). Raises
    :class:`EventDataError` naming ``where``. Called once per event of a request, so the common case
    (an ISO string with an offset) takes C-level steps only.
    """
    sub_us = 0
    if isinstance(value, str):
        text = value
        try:
            value = dt.datetime.fromisoformat(text)  # Python 3.11+: 'Z', offsets, dates, fractions
        except ValueError:
            raise EventDataError(f"{where} {text!r} is not an ISO 8601 date or timestamp") from None
        # datetime holds microseconds: the 7th-9th digits of a fraction are read here, so a request's
        # '...56.098172664Z' is the same instant as that value in a table (pandas keeps nanoseconds).
        if len(text) > 26 and (more := _SUB_MICROSECOND.search(text)):
            sub_us = int(more.group(1).ljust(3, "0"))
    elif isinstance(value, (pd.Timestamp, np.datetime64)):  # nanosecond precision: no trip through datetime
        return _timestamp_ns(pd.Timestamp(value), tz, where)
    if not isinstance(value, dt.datetime):
        if not isinstance(value, dt.date):
            raise EventDataError(f"{where} must be an ISO 8601 date or timestamp, got {value!r}")
        value = dt.datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        if tz is None:
            raise EventDataError(naive_refused(f"{where} {value.isoformat()} is a timestamp"))
        value = value.replace(tzinfo=tz)
    ns = ((value - _EPOCH) // _MICROSECOND) * 1000 + sub_us
    if not _FIRST_NS <= ns < _END_NS:
        raise EventDataError(f"{where} {value.isoformat()} is outside {RANGE_TEXT}")
    return ns


def _timestamp_ns(ts: pd.Timestamp, tz: dt.tzinfo | None, where: str) -> int:
    if ts is pd.NaT:
        raise EventDataError(f"{where} is missing")
    if ts.tzinfo is None:
        if tz is None:
            raise EventDataError(naive_refused(f"{where} {ts.isoformat()} is a timestamp"))
        try:
            ts = ts.tz_localize(tz)
        except (ValueError, OverflowError):  # a local time that does not exist, or out of range
            raise EventDataError(f"{where} {ts.isoformat()} is not a valid time in {tz}") from None
    ns = ts.as_unit("ns").value if FIRST <= ts < END else None
    if ns is None:
        raise EventDataError(f"{where} {ts.isoformat()} is outside {RANGE_TEXT}")
    return ns


def stated_ns(value: Any, timezone: str | None, what: str) -> int:
    """A stated time (as-of, cutoff, data end) as int64 ns: naive means ``timezone``, else UTC."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)  # already ns since the epoch
    return instant_ns(value, zone(timezone) or dt.timezone.utc, what)


def stated_time(value: Any, timezone: str | None, what: str) -> pd.Timestamp:
    """A stated time as a UTC ``Timestamp``: naive means ``timezone``, else UTC (see the module docstring)."""
    return pd.Timestamp(stated_ns(value, timezone, what), tz="UTC")


def now_ns() -> int:
    """The current instant, int64 ns since the epoch."""
    return pd.Timestamp.now(tz="UTC").value


def utc(ns: int) -> pd.Timestamp:
    """int64 ns since the epoch as a UTC ``Timestamp``."""
    return pd.Timestamp(ns, tz="UTC")


# ---- columns -------------------------------------------------------------------------------------

def rows_text(mask: np.ndarray | pd.Series, values: pd.Series | None = None) -> str:
    """``row 3: 'x', row 9: 'y' (and 12 more)``: 1-based data rows, header excluded."""
    idx = np.flatnonzero(np.asarray(mask))
    shown = []
    for i in idx[:_SAMPLE]:
        value = values.iloc[i] if values is not None else None
        value = value.item() if isinstance(value, np.generic) else value  # 'inf', not 'np.float64(inf)'
        shown.append(f"row {i + 1}" + (f": {value!r}" if values is not None else ""))
    more = f" (and {len(idx) - _SAMPLE:,} more)" if len(idx) > _SAMPLE else ""
    return ", ".join(shown) + more


def parse_column(raw: pd.Series, timezone: str | None, source: str, column: str = "timestamp",
                 allow_null: bool = False) -> pd.Series:
    """A column of data timestamps as ``datetime64[ns, UTC]`` (naive values: local time in ``timezone``,
    refused when it is ``None``). Nulls are errors unless ``allow_null`` (optional date attributes),
    where they stay NaT. Raises :class:`EventDataError` naming the source, column, rows and values."""
    index = raw.index
    if len(raw) == 0 or (allow_null and raw.isna().all()):  # nothing to parse, whatever dtype it came as
        return pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
    where = f"{source}: column {column!r}"
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        parsed = _in_range(raw.dt.tz_convert("UTC"), raw, where)
    elif pd.api.types.is_datetime64_dtype(raw.dtype):
        if timezone is None:
            raise EventDataError(naive_refused(f"{where} holds timestamps"))
        parsed = _in_range(raw.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"), raw, where)
    elif pd.api.types.is_numeric_dtype(raw.dtype):
        raise EventDataError(f"{where} is numeric ({raw.dtype}); timestamps must be ISO 8601 text or date-time values")
    else:
        text = raw.astype("string").str.strip()
        has_zone = text.str.contains(_TZ_SUFFIX, na=False)
        parsed = pd.Series(pd.NaT, index=index, dtype="datetime64[ns, UTC]")
        if has_zone.any():
            parsed[has_zone] = _in_range(pd.to_datetime(text[has_zone], errors="coerce", utc=True, format="ISO8601"), raw, where)
        naive = ~has_zone & text.notna()
        if naive.any():
            local = pd.to_datetime(text[naive], errors="coerce", format="ISO8601")
            unparseable = pd.Series(False, index=index)
            unparseable[naive] = local.isna()
            if unparseable.any():  # before the zone check: an unparseable value is the first thing to fix
                raise EventDataError(
                    f"{where} has {int(unparseable.sum()):,} unparseable timestamps: {rows_text(unparseable, raw)}. "
                    "Expected ISO 8601 such as '2024-05-01T10:00:00Z'"
                )
            if timezone is None:
                raise EventDataError(naive_refused(f"{where} has {int(naive.sum()):,} timestamps", f" ({rows_text(naive, raw)})"))
            parsed[naive] = _in_range(
                local.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC"), raw, where
            )
    bad = parsed.isna()
    if allow_null:
        bad = bad & raw.notna()
    if bad.any():
        raise EventDataError(
            f"{where} has {int(bad.sum()):,} missing or unparseable timestamps: {rows_text(bad, raw)}. "
            "Expected ISO 8601 such as '2024-05-01T10:00:00Z' (times that do not exist or are ambiguous in "
            f"{timezone or 'the source zone'} also land here)"
        )
    return parsed.astype("datetime64[ns, UTC]")


def _in_range(parsed: pd.Series, raw: pd.Series, where: str) -> pd.Series:
    """Refuse instants outside the supported range (before they are cast to nanoseconds)."""
    outside = pd.Series(False, index=raw.index)
    outside[parsed.index] = ((parsed < FIRST) | (parsed >= END)).fillna(False).to_numpy()
    if outside.any():
        raise EventDataError(f"{where} has {int(outside.sum()):,} timestamps outside {RANGE_TEXT}: {rows_text(outside, raw)}")
    return parsed.astype("datetime64[ns, UTC]")


def column_ns(ts: pd.Series) -> np.ndarray:
    """A datetime column as int64 ns since the epoch (UTC; naive columns are taken as UTC)."""
    values = ts.dt.tz_convert("UTC") if isinstance(ts.dtype, pd.DatetimeTZDtype) else ts
    return values.to_numpy(dtype="datetime64[ns]").view(np.int64)
