"""CDNOW: a real purchase log (23,570 customers who first bought in Q1 1997, every order to mid-1998).

The file ships inside the PyPI package ``lifetimes`` (``lifetimes/datasets/CDNOW_master.txt``:
customer id, date YYYYMMDD, number of CDs, dollar value, whitespace separated). It is read here
directly with pandas: lifetimes' own utilities do not work under pandas 3, and importing the package
is not needed to find its data file.

Only orders before ``until`` (1997-10-01) form the data set. Everything from that day on is the
holdout of another benchmark: it is read with the file and dropped at once, never handed to anything.
"""

from __future__ import annotations

import importlib.resources
import importlib.util
from pathlib import Path

import pandas as pd

from funnelcast.features.funnel import FunnelConfig, OrderLogConfig, config_from_dict
from funnelcast.features.orders import orders_to_events
from quality.dataset import QualityDataset

UNTIL = "1997-10-01"
FILE = ("datasets", "CDNOW_master.txt")

CONFIG = {
    "name": "cdnow",
    "stages": [
        {"name": "purchase", "event_types": ["first_order"]},
        {"name": "loyalty", "event_types": ["repeat_order"]},
    ],
    "purchase_event_types": ["first_order", "repeat_order"],
    "conversion": {"horizon_days": 90},
    "churn": {"definition": "inactivity", "horizon_days": 90, "applies_from_stage": "purchase"},
    "snapshots": {"every_days": 30, "anchor_date": "1997-01-01", "min_history_days": 30},
    "readiness": {"min_positives": 50, "min_eligible": 500, "min_events_per_customer": 1,
                  "max_share_sparse_customers": 1.0},
}
"""The funnel config a new user would write for CDNOW: first order → repeat order, churn by 90 days
without an order, monthly snapshots from the start of the data. Most CDNOW customers order once, so
the sparse-customer minimums are relaxed (a one-order customer is the norm here, not a data fault)."""


class CdnowNotFound(FileNotFoundError):
    """The CDNOW file is not installed (the ``lifetimes`` package is missing from the environment)."""


def cdnow_path() -> Path:
    """Where the installed ``lifetimes`` package keeps ``CDNOW_master.txt``, found without importing it."""
    spec = importlib.util.find_spec("lifetimes")
    if spec is None:
        raise CdnowNotFound("the CDNOW file ships with the 'lifetimes' package, which is not installed: "
                            "pip install -c requirements.lock lifetimes (it is in funnelcast's dev extra)")
    # The package's folder, from its import spec: finding it imports none of lifetimes' modules (which
    # set pandas options on import, and may fail under pandas 3).
    candidates = [Path(loc).joinpath(*FILE) for loc in (spec.submodule_search_locations or [])]
    for path in candidates:
        if path.is_file():
            return path
    try:  # a package that is not a plain folder (a zip, say): ask importlib.resources, which imports it
        path = Path(str(importlib.resources.files("lifetimes").joinpath(*FILE)))
        candidates.append(path)
        if path.is_file():
            return path
    except Exception:  # noqa: BLE001 - importing lifetimes may fail; say where we looked below
        pass
    raise CdnowNotFound(f"the 'lifetimes' package is installed but has no {'/'.join(FILE)} "
                        f"(looked in {', '.join(str(p) for p in candidates) or 'nowhere'})")


def read_orders(path: str | Path | None = None) -> pd.DataFrame:
    """Every row of the CDNOW file: ``customer_id`` (str), ``date`` (midnight UTC), ``cds``, ``amount``."""
    path = Path(path) if path is not None else cdnow_path()
    raw = pd.read_csv(path, sep=r"\s+", header=None, dtype=str, comment=None)
    if raw.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 whitespace-separated columns (id, date, CDs, dollars), got {raw.shape[1]}")
    if not str(raw.iat[0, 1]).isdigit():  # a header line
        raw = raw.iloc[1:]
    date = pd.to_datetime(raw[1], format="%Y%m%d", errors="coerce", utc=True)
    bad = int(date.isna().sum())
    if bad:
        raise ValueError(f"{path}: {bad} rows have a date that is not YYYYMMDD (first: {raw.loc[date.isna(), 1].iloc[0]!r})")
    return pd.DataFrame({
        "customer_id": raw[0].str.strip().to_numpy(dtype=object),
        "date": date.dt.as_unit("ns").array,
        "cds": pd.to_numeric(raw[2]).to_numpy(),
        "amount": pd.to_numeric(raw[3]).to_numpy(dtype=float),
    })


def config() -> FunnelConfig:
    """The CDNOW funnel config (:data:`CONFIG`), validated."""
    return config_from_dict(CONFIG, origin="quality/cdnow.py CONFIG")


def load(until: str = UNTIL, path: str | Path | None = None) -> QualityDataset:
    """The CDNOW data set: orders before ``until`` as events (first vs repeat orders), its funnel
    config, ``data_end = until``. No truth (real data)."""
    end = pd.Timestamp(until, tz="UTC")
    orders = read_orders(path)
    later = int((orders["date"] >= end).sum())
    orders = orders.loc[orders["date"] < end].reset_index(drop=True)  # the holdout is dropped here, unused
    # First vs repeat is decided on the orders before `until` only; a customer's first order is in Q1 1997 anyway.
    # The product's own order-log reading (features/orders.py): one event per customer and day, amounts summed.
    reading = config().model_copy(update={"order_log": OrderLogConfig(same_day="merge")})
    events, dropped, _ = orders_to_events(orders.drop(columns="cds"), reading, source="CDNOW")
    merged = sum(n for _, n in dropped)
    return QualityDataset(
        name="cdnow",
        description=f"CDNOW purchase log (real): {events['customer_id'].nunique():,} customers' orders before {end:%Y-%m-%d}",
        events=events,
        config=config(),
        data_end=end,
        notes=[
            f"{len(orders):,} order rows before {end:%Y-%m-%d}; {merged:,} same-day orders merged into one event "
            f"(amounts summed), leaving {len(events):,} events",
            f"{later:,} order rows on or after {end:%Y-%m-%d} dropped at load (another benchmark's holdout)",
        ],
    )
