"""What every data set of the quality suite provides."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from funnelcast.features.funnel import FunnelConfig


@dataclass
class QualityDataset:
    """One data set of the quality suite, as a new user would hand it to funnelcast.

    ``events`` (and ``customers``) are raw tables in funnelcast's input contract (``customer_id``,
    ``timestamp``, ``event_type``, optional ``channel``/``amount``). ``config`` is the funnel config a
    user would write from the data set's description. ``truth``, where a generator knows it, has
    ``customer_id``, ``cutoff`` and the probability columns the simulator's truth table uses
    (``p_next_stage``/``p_churn``, and ``*_given_history`` where the generator can filter its hidden
    state on the visible history). ``data_end`` (exclusive, UTC) is where the data stops: nothing at or
    after it may be read by anything the suite fits.
    """

    name: str
    description: str
    events: pd.DataFrame
    config: FunnelConfig
    data_end: pd.Timestamp
    customers: pd.DataFrame | None = None
    truth: pd.DataFrame | None = None
    targets: tuple[str, ...] = ("convert", "churn", "value")
    notes: list[str] = field(default_factory=list)
