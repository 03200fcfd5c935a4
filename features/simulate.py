"""A journey simulator with known ground truth.

Each customer is a small hidden Markov process, stepped one day at a time and vectorised over customers:

* **static traits** — latent *engagement* (scales all activity), *fit* (scales stage advances; seen
  only through how fast the customer progresses), *value* (order size and repeat rate), *service
  risk* (chance a purchase goes badly); observable attributes country, segment, acquisition channel.
* **daily state** — stage, *intent* (cold / warm / hot, a sticky Markov chain that marketing touches
  nudge upward), *mood* (ok / frustrated: after a bad purchase, raises support contacts and churn),
  *alive* (customers go silent for good at a hazard driven by intent, mood, stage, loyalty offers).
* **emissions** — events are Poisson counts per event type given the state; a stage is reached by
  emitting an event that evidences it (a newsletter sign-up *is* the step to interest). Recency,
  frequency, trend, support contacts and the inbound/outbound channel mix all reflect the latent
  state, which is what drives conversion and churn, so behaviour predicts outcomes but never fully.

Because emissions are independent given the state, the probability of any label event in
``[cutoff, cutoff + horizon)`` is computed **exactly** by a forward recursion over the latent states,
starting from each customer's state at the cutoff (``truth.parquet``): the oracle a model is measured
against. Seasonality, loyalty-offer schedules and the horizon are deterministic given that state.

The simulator speaks the default five-stage vocabulary (``features/default_funnel.yaml``); the
config supplies horizons, churn definition, qualifying events and the snapshot schedule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from funnelcast.features.errors import ConfigError, DestinationError
from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.snapshots import snapshot_cutoffs
from funnelcast.features.timestamps import DAY_NS, stated_time

STAGES = ("awareness", "interest", "consideration", "purchase", "loyalty")
COUNTRIES = (("US", 0.40), ("GB", 0.15), ("DE", 0.15), ("FR", 0.10), ("IN", 0.12), ("BR", 0.08))
SEGMENTS = (("consumer", 0.60), ("smb", 0.30), ("enterprise", 0.10))
ACQUISITION = (("search", 0.30), ("social", 0.20), ("ads", 0.25), ("referral", 0.10), ("direct", 0.10), ("email", 0.05))
# Acquisition channel -> (fit shift, first event type).
ACQ_EFFECT = {
    "search": (0.2, "search_visit"),
    "social": (-0.1, "social_visit"),
    "ads": (-0.3, "ad_click"),
    "referral": (0.6, "blog_view"),
    "direct": (0.3, "blog_view"),
    "email": (0.0, "blog_view"),
}
INBOUND = ("search", "social", "direct", "referral")
FIXED_CHANNEL = {
    "ad_impression": "ads", "ad_click": "ads", "search_visit": "search", "social_visit": "social",
    "email_sent": "email", "email_opened": "email", "loyalty_offer": "email", "outbound_call": "sales_call",
    "support_ticket": "direct", "support_call": "direct", "subscription_cancelled": "direct", "referral": "referral",
}

N_Z = 3  # intent: cold, warm, hot
BROWSE_INTENT = np.array([0.5, 2.4, 6.0])
ADVANCE_INTENT = np.array([0.3, 1.0, 2.4])
OPEN_PROB = np.array([0.04, 0.20, 0.45])
P_INBOUND = np.array([0.35, 0.65, 0.85])
INTENT_T = np.array([[0.992, 0.008, 0.0], [0.008, 0.985, 0.007], [0.0, 0.016, 0.984]])
NUDGE_T = np.array([[-0.04, 0.04, 0.0], [0.0, -0.02, 0.02], [0.0, 0.0, 0.0]])  # added on a day with an outbound touch
MOOD_BROWSE = np.array([1.0, 0.7])
MOOD_ADVANCE = np.array([1.0, 0.35])
SUPPORT_RATE = np.array([0.004, 0.22])
FRUSTRATION_BASE = 0.0015
RECOVERY = 0.05
SILENT_BASE = np.array([0.007, 0.005, 0.0035, 0.003, 0.002])
SILENT_INTENT = np.array([3.5, 0.7, 0.25])
SILENT_MOOD = np.array([1.0, 3.5])
OFFER_DAYS = 60
OFFER_DELAY_DAYS = (20, 90)
OFFER_SEGMENTS: tuple[str, ...] | None = None
ENGAGEMENT_SD = 0.45  # spread of the static engagement trait (log scale)
FIT_SD = 0.35  # spread of the static fit trait
P_CANCEL = 0.6

ROLES = ("browse", "advance", "repeat", "support", "touch", "open", "impression")
TOUCH = ROLES.index("touch")
TOUCH_TYPES = ("email_sent", "outbound_call")  # a day with one nudges intent upward


# Daily emission rates: (role, stages, {event type: rate per unit of the role's multiplier}).
RATES: tuple[tuple[str, tuple[int, ...], dict[str, float]], ...] = (
    ("browse", (0,), {"ad_click": 0.02, "search_visit": 0.03, "social_visit": 0.02, "blog_view": 0.03}),
    ("browse", (1,), {"blog_view": 0.04, "search_visit": 0.02, "content_download": 0.03, "inquiry": 0.01, "form_fill": 0.01}),
    ("browse", (2,), {"blog_view": 0.03, "pricing_view": 0.04, "product_comparison": 0.02, "review_read": 0.03,
                      "cart_add": 0.01, "search_visit": 0.02}),
    ("browse", (3, 4), {"blog_view": 0.025, "search_visit": 0.015, "review_read": 0.01, "pricing_view": 0.01, "social_visit": 0.01}),
    ("advance", (0,), {"newsletter_signup": 0.006, "form_fill": 0.003, "content_download": 0.003, "inquiry": 0.002,
                       "pricing_view": 0.0008, "order": 0.0002}),
    ("advance", (1,), {"pricing_view": 0.006, "product_comparison": 0.003, "demo_request": 0.003, "trial_request": 0.002,
                       "review_read": 0.002, "order": 0.0005}),
    ("advance", (2,), {"order": 0.011}),
    ("advance", (3,), {"repeat_order": 0.006, "referral": 0.001, "review_written": 0.001, "loyalty_join": 0.0015}),
    ("repeat", (4,), {"repeat_order": 0.012, "referral": 0.0015, "review_written": 0.001}),
    ("support", (2, 3, 4), {"support_ticket": 1.0, "support_call": 0.35}),
    ("touch", (1, 3, 4), {"email_sent": 0.08}),
    ("touch", (2,), {"email_sent": 0.08, "outbound_call": 0.02}),
    ("open", (1, 2, 3, 4), {"email_opened": 0.08}),
    ("impression", (0, 1, 2), {"ad_impression": 0.12}),
)
EMITTED_TYPES = frozenset(
    {t for _, _, rates in RATES for t in rates} | set(FIXED_CHANNEL) | {first for _, first in ACQ_EFFECT.values()}
)


def _role_tables(types: tuple[str, ...]) -> np.ndarray:
    """base[role, stage, type]: daily rate of each type per unit of the role's multiplier."""
    code = {t: i for i, t in enumerate(types)}
    base = np.zeros((len(ROLES), len(STAGES), len(types)))
    for role, stages, rates in RATES:
        for stage in stages:
            for t, rate in rates.items():
                base[ROLES.index(role), stage, code[t]] = rate
    return base


@dataclass
class Traits:
    """Static latent traits of simulated customers (engagement, fit, value, service risk)."""
    engagement: np.ndarray
    fit: np.ndarray
    value: np.ndarray
    service_risk: np.ndarray
    touch_factor: np.ndarray
    silent_factor: np.ndarray
    offer_delay: np.ndarray  # days after first purchase; inf = never offered

    def take(self, idx: np.ndarray) -> Traits:
        """The traits of customers ``idx``."""
        return Traits(**{f: getattr(self, f)[idx] for f in self.__dataclass_fields__})

    def column(self) -> Traits:
        """The traits as (n, 1) columns, to broadcast against the 6 alive states."""
        return self.take((slice(None), None))


def _season(day_of_year: np.ndarray | float) -> np.ndarray:
    return 1.0 + 0.2 * np.sin(2 * np.pi * (np.asarray(day_of_year) - 80) / 365.25)


def _holiday(month: int, day: int) -> float:
    return 1.5 if (month == 11 and day >= 15) or month == 12 else 1.0


class _Model:
    """Rates and transitions shared by the sampler and the exact truth recursion."""

    def __init__(self, types: tuple[str, ...]) -> None:
        self.types = types
        self.base = _role_tables(types)  # (R, S, K)
        self.code = {t: i for i, t in enumerate(types)}

    def multipliers(self, stage, z, mood, tr: Traits, season: float, holiday: float, offer_active) -> np.ndarray:
        """(…, R) role multipliers; all inputs broadcast together."""
        fit = np.exp(tr.fit)
        loyal_boost = np.where((stage == 3) & offer_active, 2.5, 1.0)
        val = (tr.value / 60.0) ** 0.3
        browse = tr.engagement * BROWSE_INTENT[z] * MOOD_BROWSE[mood] * season
        advance = fit * ADVANCE_INTENT[z] * MOOD_ADVANCE[mood] * season * np.where(stage == 2, holiday, 1.0) * loyal_boost
        advance = np.where(stage == 3, val * ADVANCE_INTENT[z] * MOOD_ADVANCE[mood] * loyal_boost, advance)
        repeat = val * BROWSE_INTENT[z] * MOOD_ADVANCE[mood] * holiday
        support = SUPPORT_RATE[mood] * np.ones_like(browse)
        touch = tr.touch_factor * np.ones_like(browse)
        opened = touch * OPEN_PROB[z] * np.minimum(1.0, tr.engagement)
        impression = np.ones_like(browse)
        return np.stack(np.broadcast_arrays(browse, advance, repeat, support, touch, opened, impression), axis=-1)

    def silent_hazard(self, stage, z, mood, tr: Traits, offer_active) -> np.ndarray:
        """Daily probability of going silent for good, per customer."""
        return np.clip(
            SILENT_BASE[stage] * SILENT_INTENT[z] * SILENT_MOOD[mood] * tr.silent_factor * np.where(offer_active, 0.5, 1.0),
            0.0,
            0.5,
        )

    def type_mask(self, names) -> np.ndarray:
        """A 0/1 mask over event types for ``names``."""
        m = np.zeros(len(self.types), dtype=bool)
        m[[self.code[n] for n in names if n in self.code]] = True
        return m


_Z_OF = np.repeat(np.arange(N_Z), 2)  # state (z, mood) -> z, for the 6 alive states
_M_OF = np.tile(np.arange(2), N_Z)


def _step(pi: np.ndarray, p_touch: np.ndarray, p_frustrate: np.ndarray) -> np.ndarray:
    """One day of intent and mood transitions for (n, 6) state probabilities, given each state's
    probability of an outbound touch (which nudges intent up) and of turning frustrated."""
    t_z = INTENT_T[_Z_OF][None] + p_touch[:, :, None] * NUDGE_T[_Z_OF][None]  # (n, 6 from, 3 to)
    mood_ok = np.stack([1 - p_frustrate, p_frustrate], axis=2)  # from a good mood
    mood_bad = np.broadcast_to(np.array([RECOVERY, 1 - RECOVERY]), mood_ok.shape)
    t_m = np.where((_M_OF == 0)[None, :, None], mood_ok, mood_bad)  # (n, 6 from, 2 to)
    return np.einsum("nc,ncz,ncm->nzm", pi, t_z, t_m).reshape(len(pi), 6)


class _HistoryFilter:
    """Bayes filter over each customer's hidden (intent, mood, silent) state given what the event
    log shows: the day's emissions by role, purchases, outbound touches, loyalty offers and
    cancellations. Stage and static traits are known to it; intent, mood and whether the customer
    is still alive are not. Its belief at a cutoff gives the *best achievable* probabilities for
    a model that sees the same history (and knew the traits): the truth columns ``*_given_history``.
    """

    def __init__(self, model: _Model, z0: np.ndarray, n: int) -> None:
        self.model = model
        self.belief = np.zeros((n, 6))
        self.belief[:, 0::2] = z0  # arrive alive, in a good mood, intent from the arrival distribution
        self.role_total = model.base.sum(axis=2)  # (R, S)

    def update(self, idx, s, tr: Traits, season, holiday, offer_active, counts, offer_expected, offer_seen,
               cancel, touched, bought) -> None:
        """One simulated day's Bayes-filter update of the belief about each customer's hidden state."""
        b = self.belief[idx]
        dead = np.clip(1.0 - b.sum(axis=1), 0.0, 1.0)
        trb = tr.column()
        mult = self.model.multipliers(s[:, None], _Z_OF[None, :], _M_OF[None, :], trb, season, holiday, offer_active[:, None])
        lam = mult * self.role_total[:, s].T[:, None, :]  # (m, 6, R)
        n_r = counts[:, None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            ll = (np.where(n_r > 0, n_r * np.log(lam), 0.0) - lam).sum(axis=2)
        # An alive customer gets a due loyalty offer; a silent one gets nothing at all.
        ll = np.where((offer_expected & ~offer_seen)[:, None], -np.inf, ll)
        ll_dead = np.where((counts.sum(axis=1) > 0) | offer_seen, -np.inf, 0.0)
        top = np.maximum(np.where(b > 0, ll, -np.inf).max(axis=1), np.where(dead > 0, ll_dead, -np.inf))
        top = np.where(np.isfinite(top), top, 0.0)
        w = b * np.exp(ll - top[:, None])
        wd = dead * np.exp(ll_dead - top)
        total = w.sum(axis=1) + wd
        w /= total[:, None]
        wd = wd / total
        # Going silent today (with a cancellation, seen, at P_CANCEL from the purchase stage on).
        kappa = self.model.silent_hazard(s[:, None], _Z_OF[None, :], _M_OF[None, :], trb, offer_active[:, None])
        quiet_share = np.where(s >= 3, 1 - P_CANCEL, 1.0)
        wd = wd + (w * kappa).sum(axis=1) * quiet_share
        w = w * (1 - kappa)
        norm = w.sum(axis=1) + wd
        w /= norm[:, None]
        w[cancel] = 0.0
        # Intent and mood move on the alive paths, with the day's touches and purchases as seen.
        p_frustrate = 1 - (1 - FRUSTRATION_BASE) * np.where(bought, 1 - tr.service_risk, 1.0)
        ones = np.ones((1, 6))
        self.belief[idx] = _step(w, touched[:, None] * ones, p_frustrate[:, None] * ones)


def _day_factors(day: pd.Timestamp) -> tuple[float, float]:
    return float(_season(day.day_of_year)), _holiday(day.month, day.day)


def exact_probabilities(
    model: _Model,
    stage: np.ndarray,
    z: np.ndarray,
    mood: np.ndarray,
    alive: np.ndarray,
    tr: Traits,
    offer_day: np.ndarray,
    d0: int,
    start: pd.Timestamp,
    horizon: int,
    kill_types: np.ndarray,
    kill_on_cancel: bool = False,
    belief: np.ndarray | None = None,
) -> np.ndarray:
    """P(at least one event of ``kill_types`` — or a cancellation, if ``kill_on_cancel`` — in days [d0, d0+horizon)).

    Forward recursion over the latent (intent × mood) states of an alive customer plus the absorbing
    silent state; emissions are Poisson given the state, so the per-day probability of no kill
    event is exp(-sum of killing rates), and transitions triggered by non-killing emissions use
    their marginal probabilities. Stage is constant on the no-kill paths of every target we ask
    (any stage advance is itself a kill event or a qualifying event).

    ``belief`` (n, 6), if given, replaces the known state by a distribution over the alive
    (intent, mood) states (the silent state holds the rest of the mass): the answer is linear in it.
    """
    n = len(stage)
    zz, mm = _Z_OF[None, :], _M_OF[None, :]  # the 6 alive states: (z, mood)
    if belief is None:
        pi = np.zeros((n, 6))
        pi[np.arange(n), z * 2 + mood] = alive.astype(float)
    else:
        pi = np.array(belief, dtype=float)
    killed = np.zeros(n)
    s = stage[:, None]
    trb = tr.column()
    kill_rate_base = model.base[:, :, kill_types].sum(axis=2)  # (R, S)
    purchase = model.type_mask(("order", "repeat_order"))
    trigger_purchase = model.base[:, :, purchase & ~kill_types].sum(axis=2)  # (R, S)
    touch_types = model.type_mask(TOUCH_TYPES) & ~kill_types
    touch_rate = model.base[TOUCH][:, touch_types].sum(axis=1)  # (S,)
    cancel_possible = (stage >= 3)[:, None]
    for d in range(d0, d0 + horizon):
        season, holiday = _day_factors(start + pd.Timedelta(days=d))
        offer_active = (offer_day[:, None] <= d) & (d < offer_day[:, None] + OFFER_DAYS)
        mult = model.multipliers(s, zz, mm, trb, season, holiday, offer_active)  # (n, 6, R)
        lam_kill = np.einsum("nsr,rn->ns", mult, kill_rate_base[:, stage])
        p_survive = np.exp(-lam_kill)
        killed += (pi * (1 - p_survive)).sum(axis=1)
        pi = pi * p_survive
        # Transitions on the surviving paths.
        # Transitions on the surviving paths, with emission-triggered ones at their marginal
        # probabilities (emissions of different roles are independent given the state).
        p_bought = 1 - np.exp(-np.einsum("nsr,rn->ns", mult, trigger_purchase[:, stage]))
        p_frustrate = 1 - (1 - FRUSTRATION_BASE) * (1 - tr.service_risk[:, None] * p_bought)
        p_touch = 1 - np.exp(-mult[:, :, TOUCH] * touch_rate[stage][:, None])
        kappa = model.silent_hazard(s, zz, mm, trb, offer_active)
        if kill_on_cancel:
            killed += (pi * kappa * P_CANCEL * cancel_possible).sum(axis=1)
        # Customers going silent emit nothing more: they leave the paths that can still be killed.
        pi = pi * (1 - kappa)
        pi = _step(pi, p_touch, p_frustrate)
    return killed


@dataclass
class Simulation:
    """A simulation: events, customers and truth frames, and its first and end day (UTC, end exclusive)."""
    events: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp

    def write(self, out: str | Path, fmt: str = "parquet") -> dict[str, Path]:
        """Write events, customers and truth to ``out`` as Parquet (or CSV); returns the paths by name."""
        out = Path(out)
        paths = {}
        try:
            out.mkdir(parents=True, exist_ok=True)
            for name, frame in (("events", self.events), ("customers", self.customers), ("truth", self.truth)):
                path = out / f"{name}.{fmt}"
                if fmt == "csv":
                    frame.to_csv(path, index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ")
                else:
                    frame.to_parquet(path, index=False)
                paths[name] = path
        except OSError as exc:
            raise DestinationError(f"{out}: could not write the simulation there: {exc}") from None
        return paths


def _offer_delay(rng: np.random.Generator, segment: np.ndarray) -> np.ndarray:
    """Days from first purchase to the loyalty offer (inf = never offered)."""
    draw = rng.random(len(segment))
    delay = rng.integers(*OFFER_DELAY_DAYS, len(segment)).astype(float)
    offered = np.isin(segment, OFFER_SEGMENTS) if OFFER_SEGMENTS is not None else draw < 0.5
    return np.where(offered, delay, np.inf)


def _choice(rng: np.random.Generator, table: tuple[tuple[str, float], ...], n: int) -> np.ndarray:
    names, weights = zip(*table)
    w = np.asarray(weights) / sum(weights)
    return np.asarray(names, dtype=object)[rng.choice(len(names), size=n, p=w)]


def simulate(
    n_customers: int,
    config: FunnelConfig,
    start: str | dt.date = "2024-01-01",
    end: str | dt.date = "2026-01-01",
    seed: int = 0,
    truth: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> Simulation:
    """Simulate ``n_customers`` journeys over the days ``[start, end)`` (midnight UTC), with exact truth
    at the config's snapshot cutoffs. The same seed gives the same data."""
    types = config.event_types
    absent = sorted(EMITTED_TYPES - set(types))
    if absent or config.stage_names != STAGES:
        raise ConfigError(
            "the simulator speaks the default five-stage funnel; the config lacks "
            + (f"event types {absent}" if absent else f"its stages (has {list(config.stage_names)}, needs {list(STAGES)})")
        )
    rng = np.random.default_rng(seed)
    start_ts = stated_time(start, "UTC", "start").normalize()
    end_ts = stated_time(end, "UTC", "end").normalize()
    n_days = int((end_ts - start_ts).days)
    if n_days < 30:
        raise ConfigError(f"simulate needs at least 30 days between start and end, got {n_days}")
    if n_customers < 1:
        raise ConfigError("simulate needs at least one customer")
    model = _Model(types)
    n = n_customers
    k = len(types)

    # Static attributes and latent traits.
    country = _choice(rng, COUNTRIES, n)
    segment = _choice(rng, SEGMENTS, n)
    acquisition = _choice(rng, ACQUISITION, n)
    seg_value = np.select([segment == "smb", segment == "enterprise"], [2.0, 5.0], 1.0)
    fit_shift = np.array([ACQ_EFFECT[a][0] for a in acquisition]) + np.select([segment == "enterprise"], [-0.3], 0.0)
    country_risk = np.select([country == "IN", country == "BR", country == "DE"], [1.6, 1.4, 0.8], 1.0)
    traits = Traits(
        engagement=np.exp(rng.normal(0.0, ENGAGEMENT_SD, n)),
        fit=rng.normal(0.0, FIT_SD, n) + fit_shift,
        value=np.exp(rng.normal(np.log(60.0), 0.6, n)) * seg_value,
        service_risk=np.clip(0.10 * country_risk * np.exp(rng.normal(0, 0.5, n)), 0, 0.9),
        touch_factor=np.select([segment == "enterprise", segment == "smb"], [1.8, 1.2], 1.0),
        silent_factor=np.exp(rng.normal(0.0, 0.35, n)) * np.select([segment == "enterprise"], [0.6], 1.0),
        offer_delay=_offer_delay(rng, segment),
    )
    # Arrivals: most of the population arrives in the first 85% of the period, seasonally.
    days = np.arange(int(n_days * 0.85))
    dates = start_ts + pd.to_timedelta(days, unit="D")
    w = _season(dates.day_of_year.to_numpy()) * (1 + 0.5 * days / max(len(days), 1))
    arrival = np.sort(rng.choice(days, size=n, p=w / w.sum()))
    order = rng.permutation(n)  # ids unrelated to arrival order
    ids = np.array([f"c{i:07d}" for i in range(n)], dtype=object)[order.argsort()]

    stage = np.full(n, -1, dtype=np.int64)
    z0 = np.array([0.35, 0.5, 0.15])
    z = rng.choice(N_Z, size=n, p=z0)
    mood = np.zeros(n, dtype=np.int64)
    alive = np.ones(n, dtype=bool)
    offer_day = np.full(n, np.inf)

    cutoffs = snapshot_cutoffs(start_ts, end_ts, config)
    cutoff_days = {int((c - start_ts).days): c for c in cutoffs}
    history = _HistoryFilter(model, z0, n) if truth else None
    conv_kill_by_stage = [model.type_mask([t for t, si in config.stage_of_event_type.items() if si > s]) for s in range(len(STAGES))]
    qualifying = model.type_mask(config.qualifying_event_types)
    explicit = config.churn.definition == "explicit"
    # Explicit churn is killed by the cancellation that comes with going silent, not by an emission.
    churn_kill = np.zeros(k, dtype=bool) if explicit else qualifying
    type_stage = np.array([config.stage_of_event_type.get(t, -1) for t in types])
    truth_parts: list[pd.DataFrame] = []

    ch_names = list(config.channel_names)
    inbound_codes = np.array([ch_names.index(c) for c in INBOUND])
    outbound_codes = np.array([ch_names.index(c) for c in ("email", "ads")])
    fixed = np.full(k, -1)
    for t, c in FIXED_CHANNEL.items():
        fixed[model.code[t]] = ch_names.index(c)
    purchase_mask = model.type_mask(("order", "repeat_order"))
    acq_first = np.array([model.code[ACQ_EFFECT[a][1]] for a in acquisition])
    acq_channel = np.array([ch_names.index(a) for a in acquisition])
    cum_base = np.cumsum(model.base, axis=2)  # (R, S, K) for picking the type within a role
    role_total = cum_base[:, :, -1]

    ev_c, ev_d, ev_t, ev_ch, ev_f = [], [], [], [], []  # customer, day, type, channel, time of day
    first_arrival = np.searchsorted(arrival, np.arange(n_days + 1))
    for d in range(n_days):
        day = start_ts + pd.Timedelta(days=d)
        season, holiday = _day_factors(day)
        if d in cutoff_days and truth:
            seen = np.flatnonzero(arrival < d)
            truth_parts.append(
                _truth_at(model, config, seen, stage, z, mood, alive, traits, offer_day, d, start_ts, cutoff_days[d], ids,
                          conv_kill_by_stage, churn_kill, explicit, history.belief)
            )
        # Arrivals emit their first awareness event.
        new = np.arange(first_arrival[d], first_arrival[d + 1])
        if len(new):
            stage[new] = 0
            ev_c.append(new.astype(np.int32))
            ev_d.append(np.full(len(new), d, dtype=np.int16))
            ev_t.append(acq_first[new].astype(np.int8))
            ev_ch.append(np.where(fixed[acq_first[new]] >= 0, fixed[acq_first[new]], acq_channel[new]).astype(np.int8))
            ev_f.append(rng.random(len(new)).astype(np.float32))
        act = np.flatnonzero(alive & (stage >= 0) & (arrival < d))
        if len(act) == 0:
            continue
        s, zi, mi = stage[act], z[act], mood[act]
        tr = traits.take(act)
        offer_active = (offer_day[act] <= d) & (d < offer_day[act] + OFFER_DAYS)
        mult = model.multipliers(s, zi, mi, tr, season, holiday, offer_active)  # (m, R)
        lam = mult * role_total[:, s].T  # (m, R)
        counts = rng.poisson(lam)
        # Expand role counts into events and pick each event's type within its role.
        rows, roles = np.nonzero(counts)
        reps = counts[rows, roles]
        rows = np.repeat(rows, reps)
        roles = np.repeat(roles, reps)
        u = rng.random(len(rows)) * role_total[roles, s[rows]]
        cb = cum_base[roles, s[rows]]
        etype = np.minimum((cb < u[:, None]).sum(axis=1), k - 1)
        # What today's emissions do to tomorrow's state.
        reached = np.full(len(act), -1)
        np.maximum.at(reached, rows, type_stage[etype])
        bought = np.zeros(len(act), dtype=bool)
        bought[rows[purchase_mask[etype]]] = True
        touched = np.zeros(len(act), dtype=bool)
        touched[rows[(roles == TOUCH)]] = True
        first_purchase = (s < 3) & (reached >= 3)
        new_stage = np.maximum(s, reached)
        # Times of day in [0, 0.998): an opened email comes with the email that was sent earlier that day.
        frac = rng.random(len(rows)) * 0.998
        opened = etype == model.code["email_opened"]
        rows = np.concatenate([rows, rows[opened]])
        etype = np.concatenate([etype, np.full(int(opened.sum()), model.code["email_sent"])])
        frac = np.concatenate([frac, frac[opened] * rng.random(int(opened.sum()))])
        # Loyalty offers go out on schedule.
        offered = np.flatnonzero(offer_day[act] == d)
        rows = np.concatenate([rows, offered])
        etype = np.concatenate([etype, np.full(len(offered), model.code["loyalty_offer"])])
        frac = np.concatenate([frac, rng.random(len(offered)) * 0.998])
        # Channel: fixed for some types, else inbound with a probability that grows with intent.
        inbound = rng.random(len(rows)) < P_INBOUND[zi[rows]]
        pick_in = np.where(rng.random(len(rows)) < 0.5, acq_channel[act[rows]], inbound_codes[rng.integers(0, len(inbound_codes), len(rows))])
        pick_in = np.where(np.isin(pick_in, inbound_codes), pick_in, inbound_codes[rng.integers(0, len(inbound_codes), len(rows))])
        chan = np.where(inbound, pick_in, outbound_codes[rng.integers(0, 2, len(rows))])
        chan = np.where(fixed[etype] >= 0, fixed[etype], chan)

        # Transitions from the start-of-day state and today's emissions.
        u = rng.random(len(act))
        t_rows = INTENT_T[zi] + touched[:, None] * NUDGE_T[zi]
        z_new = (np.cumsum(t_rows, axis=1) < u[:, None]).sum(axis=1)
        frustrate = rng.random(len(act)) < 1 - (1 - FRUSTRATION_BASE) * np.where(bought, 1 - tr.service_risk, 1.0)
        recover = rng.random(len(act)) < RECOVERY
        mood_new = np.where(mi == 0, frustrate, ~recover).astype(np.int64)
        kappa = model.silent_hazard(s, zi, mi, tr, offer_active)
        silent = rng.random(len(act)) < kappa
        cancel = np.flatnonzero(silent & (s >= 3) & (rng.random(len(act)) < P_CANCEL))

        rows = np.concatenate([rows, cancel])
        etype = np.concatenate([etype, np.full(len(cancel), model.code["subscription_cancelled"])])
        frac = np.concatenate([frac, 0.999 + 0.0009 * rng.random(len(cancel))])  # the day's last event
        chan = np.concatenate([chan, fixed[np.full(len(cancel), model.code["subscription_cancelled"])]])
        # Compact buffers: ~50M events for 1M customers must fit comfortably in memory.
        ev_c.append(act[rows].astype(np.int32))
        ev_d.append(np.full(len(rows), d, dtype=np.int16))
        ev_t.append(etype.astype(np.int8))
        ev_ch.append(chan.astype(np.int8))
        ev_f.append(frac.astype(np.float32))

        if history is not None:
            # What the event log shows today, for every arrived customer (silent ones show nothing).
            obs = np.flatnonzero((stage >= 0) & (arrival < d))
            at = np.searchsorted(obs, act)
            shown = np.zeros((len(obs), counts.shape[1]))
            shown[at] = counts
            flags = np.zeros((4, len(obs)), dtype=bool)  # offer seen, cancellation, touched, bought
            flags[0, at[offered]] = True
            flags[1, at[cancel]] = True
            flags[2, at] = touched
            flags[3, at] = bought
            offer_o = (offer_day[obs] <= d) & (d < offer_day[obs] + OFFER_DAYS)
            history.update(obs, stage[obs], traits.take(obs), season, holiday, offer_o, shown, offer_day[obs] == d,
                           flags[0], flags[1], flags[2], flags[3])
        stage[act] = new_stage
        z[act] = z_new
        mood[act] = mood_new
        alive[act[silent]] = False
        fp = act[first_purchase]
        offer_day[fp] = d + traits.offer_delay[fp]
        if progress is not None:
            progress(d + 1, n_days)

    # Assemble with compact dtypes, freeing as we go: ~50M events must fit comfortably in memory.
    sorted_ids = np.sort(ids)
    id_rank = np.searchsorted(sorted_ids, ids).astype(np.int32)
    customer = id_rank[np.concatenate(ev_c)]  # int32 code of the sorted customer_id
    del ev_c
    ts = np.concatenate(ev_d).astype(np.int64) * DAY_NS
    ts += (np.concatenate(ev_f).astype(np.float64) * DAY_NS).astype(np.int64)
    ts += start_ts.value
    del ev_d, ev_f
    order = np.lexsort((ts, customer))  # by customer_id, then time, like validated events
    customer = customer[order]
    ts = ts[order]
    etype = np.concatenate(ev_t)[order]
    chan = np.concatenate(ev_ch)[order]
    del ev_t, ev_ch, order
    amount = np.full(len(ts), np.nan)
    is_purchase = purchase_mask[etype]
    by_rank = np.empty(n)
    by_rank[id_rank] = traits.value
    amount[is_purchase] = np.round(np.exp(rng.normal(np.log(by_rank[customer[is_purchase]]), 0.4)), 2)
    events = pd.DataFrame(
        {
            # Dictionary-encoded: one string per customer, not per event (Parquet keeps the dictionary).
            "customer_id": pd.Categorical.from_codes(customer, categories=pd.Index(sorted_ids, dtype="string")),
            "timestamp": pd.to_datetime(ts, utc=True),
            "event_type": pd.Categorical.from_codes(etype, categories=list(types)),
            "channel": pd.Categorical.from_codes(chan, categories=ch_names),
            "amount": amount,
        }
    )
    del customer, ts, etype, chan, amount
    customers = pd.DataFrame(
        {
            "customer_id": pd.array(ids, dtype="string"),
            "country": pd.Categorical(country),
            "segment": pd.Categorical(segment),
            "acquisition_channel": pd.Categorical(acquisition),
            "signup_date": start_ts + pd.to_timedelta(arrival, unit="D"),
        }
    ).sort_values("customer_id", ignore_index=True)
    truth_frame = pd.concat(truth_parts, ignore_index=True) if truth_parts else pd.DataFrame(
        columns=["customer_id", "cutoff", "stage", "p_next_stage", "p_churn", "p_next_stage_given_history", "p_churn_given_history"]
    )
    return Simulation(events=events, customers=customers, truth=truth_frame, start=start_ts, end=end_ts)


def _truth_at(model, config, seen, stage, z, mood, alive, traits, offer_day, d, start, cutoff, ids,
              conv_kill_by_stage, churn_kill, explicit, belief) -> pd.DataFrame:
    """Exact P(next stage within the conversion horizon) and P(churn within the churn horizon) at day
    ``d``: from the hidden state (``p_next_stage``, ``p_churn``) and from the history filter's
    belief about it (``p_next_stage_given_history``, ``p_churn_given_history``)."""
    s = stage[seen]
    tr = traits.take(seen)
    out = {}
    for suffix, start_belief in (("", None), ("_given_history", belief[seen])):
        p_next = np.full(len(seen), np.nan)
        p_churn = np.full(len(seen), np.nan)
        for st in range(len(STAGES) - 1):
            rows = np.flatnonzero(s == st)
            if len(rows):
                p_next[rows] = exact_probabilities(
                    model, s[rows], z[seen][rows], mood[seen][rows], alive[seen][rows], tr.take(rows), offer_day[seen][rows],
                    d, start, config.conversion.horizon_days, conv_kill_by_stage[st],
                    belief=None if start_belief is None else start_belief[rows],
                )
        rows = np.flatnonzero(s >= config.churn_stage_index)
        if len(rows):
            p_kill = exact_probabilities(
                model, s[rows], z[seen][rows], mood[seen][rows], alive[seen][rows], tr.take(rows), offer_day[seen][rows],
                d, start, config.churn.horizon_days, churn_kill, kill_on_cancel=explicit,
                belief=None if start_belief is None else start_belief[rows],
            )
            # Inactivity churn is the *absence* of qualifying events; explicit churn is a cancellation.
            p_churn[rows] = p_kill if explicit else 1.0 - p_kill
        out[f"p_next_stage{suffix}"] = p_next
        out[f"p_churn{suffix}"] = p_churn
    return pd.DataFrame(
        {
            "customer_id": pd.array(ids[seen], dtype="string"),
            "cutoff": cutoff,
            "stage": pd.Categorical.from_codes(s, categories=list(STAGES)),
            **out,
        }
    )
