"""Order logs as a source: a plain transaction log (one row per order) read as funnel events.

Most shops start with nothing but an order log: ``customer_id``, ``timestamp`` (or ``date``),
``amount``, and maybe ``quantity``. With ``order_log`` set in the funnel config (the shipped
``order-log`` preset sets it), every reader of events takes such a table instead:

- a customer's orders on one calendar day (in ``source_timezone``, else UTC) become one order at the
  day's first timestamp, amounts and quantities summed (``order_log.same_day: merge``, the default:
  a basket split over several rows is one purchase); the rows merged away are counted as dropped and
  the orders they were added to as altered, in the validation summary;
- each customer's first order becomes ``order_log.first_order_event``, every later one
  ``order_log.repeat_order_event``. Whether an order is the first depends only on the orders before
  it, so the mapping is point-in-time; a customer whose first order predates the log is seen as new.

The result goes through :func:`~funnelcast.features.events.validate_events` like any event table
(timestamps, amounts, as-of time and duplicates checked and counted there), with the summary's rows
read set back to the order rows read.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from funnelcast.features.errors import EventDataError
from funnelcast.features.events import ValidationSummary, _amounts, _ids, validate_events
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.timestamps import parse_column, rows_text, zone

TIME_COLUMNS = ("timestamp", "date")
"""The order's time: either column name (``timestamp`` wins where both are present)."""
MERGED = "same-day orders merged into the customer's first order of that day (order_log.same_day: merge)"
ABSORBED = "orders that absorbed later same-day orders (amounts and quantities summed)"


def orders_to_events(raw: pd.DataFrame, config: FunnelConfig, source: str = "orders") -> tuple[pd.DataFrame, list[tuple[str, int]], list[tuple[str, int]]]:
    """An order table as a raw event table (``customer_id``, ``timestamp``, ``event_type``, ``amount``
    and, with a ``quantity`` column, ``properties`` holding it), plus the rows dropped and altered on the
    way as ``(reason, count)`` lists. Raises :class:`EventDataError` naming what is missing or wrong."""
    settings = config.order_log
    if settings is None:
        raise EventDataError(f"{source}: the funnel config has no order_log section, so it reads event logs")
    time_column = next((c for c in TIME_COLUMNS if c in raw.columns), None)
    missing = [c for c in ("customer_id", "amount") if c not in raw.columns] + ([] if time_column else ["timestamp or date"])
    if missing:
        raise EventDataError(f"{source}: an order log needs the columns customer_id, timestamp (or date) and amount; "
                             f"missing: {', '.join(missing)} (columns found: {', '.join(map(str, raw.columns))})")
    raw = raw.reset_index(drop=True)
    # Ids, times and amounts are checked on the rows as given, so an error names the order's own row.
    orders = pd.DataFrame({
        "customer_id": _ids(raw["customer_id"], source, "orders"),
        "timestamp": parse_column(raw[time_column], config.source_timezone, source, column=time_column),
        "amount": _amounts(raw, source),
    })
    has_quantity = "quantity" in raw.columns
    if has_quantity:
        quantity = pd.to_numeric(raw["quantity"], errors="coerce")
        bad = quantity.isna() & raw["quantity"].notna()
        if bad.any():
            raise EventDataError(f"{source}: column 'quantity' has {int(bad.sum()):,} non-numeric values: "
                                 f"{rows_text(bad, raw['quantity'])}")
        orders["quantity"] = quantity
    dropped: list[tuple[str, int]] = []
    altered: list[tuple[str, int]] = []
    if settings.same_day == "merge" and len(orders):
        tz = zone(config.source_timezone) if config.source_timezone else "UTC"
        orders["day"] = orders["timestamp"].dt.tz_convert(tz).dt.floor("D")
        by_day = orders.groupby(["customer_id", "day"], sort=False)
        daily = by_day["timestamp"].min().to_frame()
        daily["amount"] = by_day["amount"].sum(min_count=1)  # NaN only where every merged amount is missing
        if has_quantity:
            daily["quantity"] = by_day["quantity"].sum(min_count=1)
        daily["rows"] = by_day.size()
        daily = daily.reset_index()
        dropped.append((MERGED, int(len(orders) - len(daily))))
        altered.append((ABSORBED, int((daily["rows"] > 1).sum())))
        orders = daily.drop(columns=["day", "rows"])
    orders = orders.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)
    first = ~orders["customer_id"].duplicated()  # sorted by customer, then time: a customer's first row
    events = pd.DataFrame({
        "customer_id": orders["customer_id"],
        "timestamp": orders["timestamp"],
        "event_type": np.where(first.to_numpy(), settings.first_order_event, settings.repeat_order_event),
        "amount": orders["amount"],
    })
    if has_quantity:  # JSON text, built for the whole column at once (null where no quantity)
        events["properties"] = '{"quantity": ' + orders["quantity"].astype("float64").astype("string") + "}"
    return events, dropped, altered


def validate_orders(raw: pd.DataFrame, config: FunnelConfig, source: str = "orders", as_of: Any = None,
                    notes: Sequence[tuple[str, int]] = ()) -> tuple[pd.DataFrame, ValidationSummary]:
    """Validate an order table as the funnel's events: (canonical events, ValidationSummary), the
    summary counting the order rows read and every merge (module docstring)."""
    events, dropped, altered = orders_to_events(raw, config, source)
    canonical, summary = validate_events(events, config, source=source, as_of=as_of, notes=notes)
    summary.rows_read = len(raw)
    for reason, n in dropped:
        summary.drop(reason, n)
    for reason, n in altered:
        summary.alter(reason, n)
    return canonical, summary
