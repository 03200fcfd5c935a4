"""A subscription product: trials, monthly renewals and explicit cancellation driven by a hidden satisfaction.

**Hidden.** Every prospect arrives with a static *intent* and an *attention span*: the chance of starting
a trial on a given day is ``intent * exp(-age / span)``, so interest fades deterministically after the
first visit instead of jumping between discrete moods. When the trial starts the customer gets a
*satisfaction* ``S`` on a grid of 13 levels (-3 … 3 in steps of 0.5), which from then on moves every day
as a discretised Ornstein–Uhlenbeck process: a birth–death step pulled towards the customer's own
long-run level ``mu`` (half-life about six weeks), plus rare *incidents* (an outage, a bad bill) that
knock it down two levels at once. ``mu``, the usage habit, the incident rate and the intent are static
per customer and never shown.

**Visible.** Prospects emit ``site_visit``/``pricing_view`` at a rate that fades with their attention
(pricing views scale with intent). Trial users and subscribers emit ``login`` and ``feature_use`` at a
rate that is a customer-specific habit times a power of ``exp(S)`` (feature use reacts to satisfaction
more than logins do), ``support_ticket`` more often when ``S`` is low (and on most incidents), and now
and then an in-app survey answer (``survey_happy``/``survey_neutral``/``survey_unhappy``: ``S`` read
through noise). Everybody not cancelled gets a weekly ``email_sent`` newsletter (outbound, uninformative).
The 14-day trial converts early at a small rate, at its last day with a probability rising in ``S``,
and otherwise expires (``trial_expired``) with a fading chance of a later win-back.
``subscription_started`` and monthly ``renewal`` events (on the day of month the subscription started,
clipped to short months) carry ``price * seats``. A subscriber cancels with a daily hazard
``base * w(days to the next charge) * exp(-(S - 0.5))``: the weight ``w`` is 15 times higher in the five
days before a charge than mid-cycle, so cancellations pile up just before renewals. A canceller stays
active up to the day of ``subscription_cancelled`` and then falls silent for good. About 30% of the
customers were already subscribers when the log starts (2025-01-01): their sign-up and earlier payments
are not in the log (only their ``signup_date`` attribute), so funnelcast first sees them at their next
renewal.

**Truth.** The outcome of every label depends on the future only through ``S`` (a Markov chain with
known per-customer transitions) and deterministic calendars (trial end, charge dates), so
``p_next_stage`` and ``p_churn`` are computed exactly by a forward recursion over the 13 levels from each
customer's state at the cutoff, vectorised over customers, one step per day of the horizon. Unlike
funnelcast's simulator (a three-state intent chain with Poisson stage emissions and a silent-exit
hazard), stages here are reached by deadlines and calendars, the churn-relevant state is a continuous-ish
mean-reverting level with shocks, churn is an explicit event timed by the billing cycle, and history
before the log is truncated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnelcast.features.funnel import FunnelConfig, config_from_dict
from funnelcast.features.snapshots import snapshot_cutoffs
from funnelcast.features.timestamps import DAY_NS
from quality.dataset import QualityDataset

START = pd.Timestamp("2025-01-01", tz="UTC")
END = pd.Timestamp("2025-06-01", tz="UTC")
N_DAYS = (END - START).days
_EPOCH = np.datetime64("2025-01-01", "D")

STAGES = ("visitor", "trial", "subscribed", "renewed")
EVENT_TYPES = (
    "site_visit", "pricing_view", "trial_started", "subscription_started", "renewal",
    "login", "feature_use", "support_ticket", "survey_happy", "survey_neutral", "survey_unhappy",
    "trial_expired", "email_sent", "subscription_cancelled",
)
CHANNELS = ("search", "social", "referral", "ads", "web", "app", "support", "email", "billing")
ACQUISITION = ("search", "social", "referral", "ads")
ACQ_WEIGHTS = np.array([0.4, 0.2, 0.15, 0.25])
ACQ_INTENT = np.array([1.1, 0.8, 1.6, 0.7])  # intent multiplier by acquisition channel
ACQ_MU = np.array([0.0, -0.1, 0.3, -0.25])  # satisfaction level shift by acquisition channel
PRICE = np.array([12.0, 29.0])  # per seat and month: basic, pro

LEVELS = np.arange(-3.0, 3.0 + 1e-9, 0.5)  # satisfaction grid
K = len(LEVELS)
CENTRE = 0.5
STEP = 0.04  # daily chance of a one-level move either way at the long-run level
PULL = 0.015  # extra up (down) chance per unit of satisfaction below (above) the long-run level
INCIDENT_DROP = 2  # levels an incident knocks satisfaction down
TRIAL_DAYS = 14
CANCEL_BASE = 0.0019
CANCEL_SLOPE = 1.0
HORIZON = 30
EVERY = 7
ANCHOR = "2025-01-06"


def _code(name: str) -> int:
    return EVENT_TYPES.index(name)


def _channel(name: str) -> int:
    return CHANNELS.index(name)


# ---- calendar ---------------------------------------------------------------------------------------
def add_months(day: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Day index (from 2025-01-01) of ``k`` calendar months after ``day``, on the same day of month,
    clipped to the end of shorter months (Jan 31 + 1 month = Feb 28)."""
    day = np.asarray(day, dtype=np.int64)
    base = _EPOCH + day.astype("timedelta64[D]")
    month = base.astype("datetime64[M]")
    dom = (base - month.astype("datetime64[D]")).astype(np.int64)  # 0-based day of month
    target = month + np.asarray(k, dtype=np.int64).astype("timedelta64[M]")
    first = target.astype("datetime64[D]")
    length = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    return (first + np.minimum(dom, length - 1) - _EPOCH).astype(np.int64)


def _renewals_before(start: np.ndarray, day: int) -> np.ndarray:
    """How many monthly charges after ``start`` fall strictly before ``day``."""
    months = (_EPOCH + np.int64(day)).astype("datetime64[M]").astype(np.int64) - (
        _EPOCH + start.astype("timedelta64[D]")).astype("datetime64[M]").astype(np.int64)
    k = np.maximum(months - 1, 0)
    for _ in range(3):
        k = np.where(add_months(start, k + 1) < day, k + 1, k)
    return k


def _renewal_weight(g: np.ndarray) -> np.ndarray:
    """Cancellation weight by days until the next charge (0: the charge is today, before it is taken)."""
    return np.select([g == 0, g <= 5, g <= 10], [0.3, 3.0, 0.8], 0.2)


# ---- hazards shared by the sampler and the truth recursion --------------------------------------------
def _cancel_hazard(g: np.ndarray, s: np.ndarray) -> np.ndarray:
    return 1.0 - np.exp(-CANCEL_BASE * _renewal_weight(g) * np.exp(-CANCEL_SLOPE * (s - CENTRE)))


def _early_upgrade(s: np.ndarray) -> np.ndarray:
    return 0.008 * np.exp(0.9 * (s - CENTRE))


def _trial_end(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(-0.3 + 1.4 * (s - CENTRE))))


def _winback(s: np.ndarray, since_end: np.ndarray) -> np.ndarray:
    return 0.005 * np.exp(0.8 * (s - CENTRE)) * np.exp(-since_end / 30.0)


def _trial_hazard(day: int, t_end: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Chance of subscribing on ``day`` for a trial user (or an expired one) at satisfaction ``s``."""
    since = day - t_end
    return np.where(since < 0, _early_upgrade(s),
                    np.where(since == 0, _trial_end(s), _winback(s, np.maximum(since, 1))))


def _moves(mu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(C, K) daily chances of moving one level up and one level down."""
    gap = mu[:, None] - LEVELS[None, :]
    up = np.clip(STEP + PULL * gap, 0.0, 0.45)
    down = np.clip(STEP - PULL * gap, 0.0, 0.45)
    up[:, -1] = 0.0
    down[:, 0] = 0.0
    return up, down


def _propagate(pi: np.ndarray, up: np.ndarray, down: np.ndarray, incident: np.ndarray) -> np.ndarray:
    """One day of the satisfaction chain applied to (C, K) masses."""
    stay = pi * (1.0 - up - down)
    moved = stay.copy()
    moved[:, 1:] += (pi * up)[:, :-1]
    moved[:, :-1] += (pi * down)[:, 1:]
    hit = np.zeros_like(pi)
    hit[:, :-INCIDENT_DROP] = pi[:, INCIDENT_DROP:]
    hit[:, 0] += pi[:, :INCIDENT_DROP].sum(axis=1)
    e = incident[:, None]
    return (1.0 - e) * moved + e * hit


# ---- the data set --------------------------------------------------------------------------------------
def config() -> FunnelConfig:
    """The funnel config a user would write from this data set's description."""
    return config_from_dict({
        "name": "subscription-product",
        "stages": [
            {"name": "visitor", "event_types": ["site_visit", "pricing_view"]},
            {"name": "trial", "event_types": ["trial_started"]},
            {"name": "subscribed", "event_types": ["subscription_started"]},
            {"name": "renewed", "event_types": ["renewal"]},
        ],
        "other_event_types": ["login", "feature_use", "support_ticket", "survey_happy", "survey_neutral",
                              "survey_unhappy", "trial_expired", "email_sent", "subscription_cancelled"],
        "event_groups": {
            "usage": ["login", "feature_use"],
            "support": ["support_ticket"],
            "survey": ["survey_happy", "survey_neutral", "survey_unhappy"],
        },
        "purchase_event_types": ["subscription_started", "renewal"],
        "outbound_event_types": ["email_sent"],
        "channels": {"search": "inbound", "social": "inbound", "referral": "inbound", "web": "inbound",
                     "app": "inbound", "support": "inbound", "billing": "inbound", "ads": "outbound",
                     "email": "outbound"},
        "conversion": {"horizon_days": HORIZON, "active_within_days": 60},
        "churn": {"definition": "explicit", "horizon_days": HORIZON, "applies_from_stage": "subscribed",
                  "churn_event_types": ["subscription_cancelled"]},
        "features": {"windows_days": [7, 30, 90], "trend_days": 14},
        "snapshots": {"every_days": EVERY, "anchor_date": ANCHOR, "min_history_days": 28},
        "training": {"folds": 3, "validation_cutoffs": 2},
    })


class _Log:
    """Events collected day by day as (customers, day, type, channel, amounts) parts, expanded at the end."""

    def __init__(self) -> None:
        self.parts: list[tuple] = []

    def add(self, who: np.ndarray, day: int, etype: str, channel: int | np.ndarray,
            amount: np.ndarray | None = None, counts: np.ndarray | None = None) -> None:
        if counts is not None:
            who = np.repeat(who, counts)
            channel = np.repeat(channel, counts) if np.ndim(channel) else channel
            amount = np.repeat(amount, counts) if amount is not None else None
        if len(who):
            self.parts.append((who, day, _code(etype), channel, amount))

    def frame(self, ids: np.ndarray, rng: np.random.Generator, terminal: tuple[str, ...]) -> pd.DataFrame:
        sizes = np.array([len(p[0]) for p in self.parts])
        ends = np.cumsum(sizes)
        who = np.concatenate([p[0] for p in self.parts]).astype(np.int64)
        day = np.repeat(np.array([p[1] for p in self.parts], dtype=np.int64), sizes)
        etype = np.repeat(np.array([p[2] for p in self.parts], dtype=np.int64), sizes)
        scalar = [np.ndim(p[3]) == 0 for p in self.parts]
        channel = np.repeat(np.array([p[3] if s else -1 for p, s in zip(self.parts, scalar)], dtype=np.int64), sizes)
        amount = np.full(len(who), np.nan)
        for i, (p, s) in enumerate(zip(self.parts, scalar)):
            if not s:
                channel[ends[i] - sizes[i]:ends[i]] = p[3]
            if p[4] is not None:
                amount[ends[i] - sizes[i]:ends[i]] = p[4]
        # Time of day: a terminal event comes last in its day (the customer is active until then).
        late = np.isin(etype, [_code(t) for t in terminal])
        frac = np.where(late, 0.9 + 0.1 * rng.random(len(who)), 0.9 * rng.random(len(who)))
        ns = START.value + day * DAY_NS + (frac * DAY_NS).astype(np.int64)
        channels = np.array(list(CHANNELS) + [None], dtype=object)
        frame = pd.DataFrame({
            "customer_id": ids[who],
            "timestamp": pd.to_datetime(ns, utc=True),
            "event_type": np.array(EVENT_TYPES, dtype=object)[etype],
            "channel": channels[np.where(channel < 0, len(CHANNELS), channel)],
            "amount": amount,
        })
        return frame.sort_values(["customer_id", "timestamp"], kind="stable").reset_index(drop=True)


def _level_index(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint((x - LEVELS[0]) / 0.5), 0, K - 1).astype(np.int64)


def generate(n_customers: int = 8000, seed: int = 0) -> QualityDataset:
    """Simulate the subscription product for ``n_customers`` customers (about 30% already subscribed on
    2025-01-01, the rest arriving as prospects until 2025-06-01), with exact truth at the config's cutoffs."""
    if n_customers < 10:
        raise ValueError("the subscription generator needs at least 10 customers")
    rng = np.random.default_rng(seed)
    cfg = config()
    n = n_customers
    n_pre = int(round(0.3 * n))
    pre = np.zeros(n, dtype=bool)
    pre[:n_pre] = True

    # Static attributes and traits.
    acq = rng.choice(len(ACQUISITION), size=n, p=ACQ_WEIGHTS)
    pro = rng.random(n) < np.where(acq == 2, 0.45, 0.3)
    seats = np.where(pro, 1 + rng.poisson(3.0, n), 1 + rng.poisson(0.5, n)).astype(np.int64)
    price = PRICE[pro.astype(int)] * seats
    intent_z = rng.normal(-0.4, 0.9, n)
    intent = np.minimum(0.05 * np.exp(intent_z) * ACQ_INTENT[acq], 0.6)
    span = 4.0 + 24.0 * rng.beta(2.0, 2.0, n)
    mu = CENTRE + rng.normal(0.0, 0.7, n) + ACQ_MU[acq] + 0.15 * pro + 0.15 * (intent_z + 0.4)
    login_rate = 0.7 * np.exp(rng.normal(0.0, 0.55, n)) * seats ** 0.25
    feature_rate = 0.45 * np.exp(rng.normal(0.0, 0.5, n)) * np.where(pro, 1.4, 1.0) * seats ** 0.2
    ticket_rate = 0.012 * seats ** 0.2
    incident = 0.005 * np.exp(rng.normal(0.0, 0.4, n)) * np.where(pro, 1.2, 1.0)
    up, down = _moves(mu)

    # Phases: -1 not arrived, 0 visitor, 1 trial, 2 trial expired, 3 subscribed, 4 renewed, 5 cancelled.
    phase = np.full(n, -1, dtype=np.int64)
    arrival = rng.integers(0, N_DAYS, n)
    sub_start = np.full(n, -(10**6), dtype=np.int64)
    n_renew = np.zeros(n, dtype=np.int64)
    t0 = np.full(n, -(10**6), dtype=np.int64)
    level = np.zeros(n, dtype=np.int64)
    # Customers already subscribed when the log starts.
    sub_start[pre] = rng.integers(-540, -35, n_pre)
    arrival[pre] = sub_start[pre] - TRIAL_DAYS - rng.integers(0, 30, n_pre)
    n_renew[pre] = _renewals_before(sub_start[pre], 0)
    phase[pre] = 4
    level[pre] = _level_index(mu[pre] + rng.normal(0.0, 0.8, n_pre))

    ids = np.array([f"u{i:06d}" for i in rng.permutation(n)], dtype=object)
    log = _Log()
    grid = pd.date_range(ANCHOR, periods=60, freq=f"{EVERY}D", tz="UTC")
    truth_days = {int((c - START).days): c for c in grid if 1 <= (c - START).days <= N_DAYS - HORIZON}
    truth_parts = []
    email, app, web, support, billing = (_channel(c) for c in ("email", "app", "web", "support", "billing"))
    renewed_ever = n_renew > 0
    acq_channel = np.array([_channel(a) for a in ACQUISITION], dtype=np.int64)

    for d in range(N_DAYS):
        if d in truth_days:
            truth_parts.append(_truth(d, truth_days[d], ids, phase, renewed_ever, arrival, intent, span, level, up, down,
                                      incident, t0, sub_start, n_renew))
        # Arrivals: the first visit, through the acquisition channel.
        new = np.flatnonzero((arrival == d) & ~pre)
        phase[new] = 0
        log.add(new, d, "site_visit", acq_channel[acq[new]])

        alive = (phase >= 0) & (phase <= 4) & (arrival < d)
        log.add(np.flatnonzero(alive & (rng.random(n) < 1 / 7)), d, "email_sent", email)

        # Prospects: fading attention; a trial starts at intent * attention.
        vis = np.flatnonzero((phase == 0) & (arrival < d))
        att = np.exp(-(d - arrival[vis]) / span[vis])
        log.add(vis, d, "site_visit", web, counts=rng.poisson(0.3 * att))
        log.add(vis, d, "pricing_view", web, counts=rng.poisson(0.6 * intent[vis] ** 0.5 * att))
        starts = vis[rng.random(len(vis)) < np.minimum(intent[vis] * att, 1.0)]

        # Users of the product (trial or subscribed): usage, tickets, surveys from today's satisfaction.
        trial = np.flatnonzero((phase == 1) & (t0 < d))
        subs = np.flatnonzero(((phase == 3) | (phase == 4)) & (sub_start < d))
        users = np.concatenate([trial, subs])
        s = LEVELS[level[users]]
        boost = np.concatenate([np.full(len(trial), 1.25), np.ones(len(subs))])
        log.add(users, d, "login", app, counts=rng.poisson(boost * login_rate[users] * np.exp(0.35 * (s - CENTRE))))
        log.add(users, d, "feature_use", app, counts=rng.poisson(boost * feature_rate[users] * np.exp(0.8 * (s - CENTRE))))
        log.add(users, d, "support_ticket", support, counts=rng.poisson(ticket_rate[users] * np.exp(-0.9 * (s - CENTRE))))
        answered = rng.random(len(users)) < 0.02
        reading = s + rng.normal(0.0, 0.8, len(users))
        log.add(users[answered & (reading > 1.2)], d, "survey_happy", app)
        log.add(users[answered & (reading <= 1.2) & (reading >= -0.2)], d, "survey_neutral", app)
        log.add(users[answered & (reading < -0.2)], d, "survey_unhappy", app)

        # Trials: early upgrade, the decision on the last day, or expiry; expired trials may come back.
        tri = np.flatnonzero(((phase == 1) & (t0 < d)) | (phase == 2))
        t_end = t0[tri] + TRIAL_DAYS
        expired = tri[phase[tri] == 2]
        fade = np.exp(-(d - t0[expired] - TRIAL_DAYS) / 30.0)
        log.add(expired, d, "site_visit", web, counts=rng.poisson(0.04 * fade))
        converts = rng.random(len(tri)) < _trial_hazard(d, t_end, LEVELS[level[tri]])
        won = tri[converts]
        lapse = tri[~converts & (t_end == d)]

        # Subscribers: cancel (mostly just before a charge), else pay on the charge day.
        nxt = add_months(sub_start[subs], n_renew[subs] + 1)
        cancels = rng.random(len(subs)) < _cancel_hazard(nxt - d, LEVELS[level[subs]])
        gone = subs[cancels]
        pay = subs[~cancels & (nxt == d)]

        # Apply today's transitions.
        log.add(starts, d, "trial_started", web)
        phase[starts] = 1
        t0[starts] = d
        level[starts] = _level_index(mu[starts] + rng.normal(0.0, 0.6, len(starts)))
        log.add(won, d, "subscription_started", billing, amount=price[won])
        phase[won] = 3
        sub_start[won] = d
        log.add(lapse, d, "trial_expired", web)
        phase[lapse] = 2
        log.add(gone, d, "subscription_cancelled", billing)
        phase[gone] = 5
        log.add(pay, d, "renewal", billing, amount=price[pay])
        n_renew[pay] += 1
        renewed_ever[pay] = True
        phase[pay] = 4

        # Satisfaction moves overnight (incidents raise a ticket most of the time).
        live = np.flatnonzero((phase >= 1) & (phase <= 4))
        hit = rng.random(len(live)) < incident[live]
        u = rng.random(len(live))
        lv = level[live]
        pu, pd_ = up[live, lv], down[live, lv]
        moved = np.where(u < pu, lv + 1, np.where(u < pu + pd_, lv - 1, lv))
        level[live] = np.where(hit, np.maximum(lv - INCIDENT_DROP, 0), moved)
        in_product = np.isin(phase[live], (1, 3, 4))
        log.add(live[hit & in_product & (rng.random(len(live)) < 0.85)], d, "support_ticket", support)

    events = log.frame(ids, rng, terminal=("subscription_cancelled",))
    seen = np.isin(ids, events["customer_id"].unique())
    customers = pd.DataFrame({
        "customer_id": ids,
        "plan": np.where(pro, "pro", "basic"),
        "acquisition_channel": np.array(ACQUISITION, dtype=object)[acq],
        "seats": seats.astype(np.float64),
        "signup_date": START + pd.to_timedelta(arrival, unit="D"),
    })[seen].sort_values("customer_id").reset_index(drop=True)
    cutoffs = set(snapshot_cutoffs(events["timestamp"].min(), END, cfg))
    truth = pd.concat(truth_parts, ignore_index=True)
    truth = truth[truth["cutoff"].isin(cutoffs)].reset_index(drop=True)
    return QualityDataset(
        name="subscription",
        description=(
            "A subscription product, 2025-01-01 to 2025-06-01: prospects visit, start a 14-day trial, subscribe "
            "(first payment) and renew monthly on their sign-up day of month; subscribers cancel explicitly "
            "(subscription_cancelled). Usage (logins, feature use), support tickets and in-app survey answers are "
            "logged; a weekly newsletter goes to everyone. About 30% were subscribers before the log starts."
        ),
        events=events,
        config=cfg,
        data_end=END,
        customers=customers,
        truth=truth,
        notes=[
            "pre-existing subscribers have no subscription_started in the log: funnelcast sees them from their "
            "first renewal in it (stage renewed)",
            "truth is exact given the hidden satisfaction level, trial/charge calendars and static traits",
        ],
    )


def _truth(d, cutoff, ids, phase, renewed_ever, arrival, intent, span, level, up, down, incident, t0, sub_start,
           n_renew) -> pd.DataFrame:
    """Exact P(next stage within the horizon) and P(cancel within the horizon) from the state at the
    start of day ``d`` (the cutoff), for every customer with an event before it."""
    seen = np.flatnonzero((phase >= 0) & (arrival < d))
    ph = phase[seen]
    p_next = np.full(len(seen), np.nan)
    p_churn = np.full(len(seen), np.nan)
    days = d + np.arange(HORIZON)

    vis = np.flatnonzero(ph == 0)
    c = seen[vis]
    age = days[None, :] - arrival[c][:, None]
    q = np.minimum(intent[c][:, None] * np.exp(-age / span[c][:, None]), 1.0)
    p_next[vis] = 1.0 - np.prod(1.0 - q, axis=1)

    # Trial users and subscribers: forward over the satisfaction levels.
    rows = np.flatnonzero((ph >= 1) & (ph <= 4))
    c = seen[rows]
    pr = ph[rows]
    is_trial = pr <= 2
    pi = np.zeros((len(c), K))
    pi[np.arange(len(c)), level[c]] = 1.0
    uc, dc, ic = up[c], down[c], incident[c]
    t_end = t0[c] + TRIAL_DAYS
    charges = np.stack([add_months(sub_start[c], n_renew[c] + k) for k in (1, 2, 3)], axis=1)
    first_charge = np.where(pr == 3, charges[:, 0], -1)
    converted = np.zeros(len(c))
    cancelled = np.zeros(len(c))
    for day in days:
        h_trial = _trial_hazard(day, t_end[:, None], LEVELS[None, :])
        nxt = np.where(charges[:, 0] >= day, charges[:, 0], np.where(charges[:, 1] >= day, charges[:, 1], charges[:, 2]))
        h_cancel = _cancel_hazard((nxt - day)[:, None], LEVELS[None, :])
        h = np.where(is_trial[:, None], h_trial, h_cancel)
        mass = pi * h
        pi = pi - mass
        converted += np.where(is_trial, mass.sum(axis=1), 0.0)
        cancelled += np.where(is_trial, 0.0, mass.sum(axis=1))
        converted += np.where(first_charge == day, pi.sum(axis=1), 0.0)
        pi = _propagate(pi, uc, dc, ic)
    p_next[rows] = np.where(pr == 4, np.nan, converted)
    p_churn[rows] = np.where(is_trial, np.nan, cancelled)
    # Cancelled before ever renewing: stuck at "subscribed" for good.
    p_next[(ph == 5) & ~renewed_ever[seen]] = 0.0

    stage = np.select([ph == 0, ph <= 2, ph == 3, ph == 4], [0, 1, 2, 3], np.where(renewed_ever[seen], 3, 2))
    return pd.DataFrame({
        "customer_id": pd.array(ids[seen], dtype="string"),
        "cutoff": cutoff,
        "stage": pd.Categorical.from_codes(stage, categories=list(STAGES)),
        "p_next_stage": p_next,
        "p_churn": p_churn,
    })
