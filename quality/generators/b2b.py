"""A B2B journey: leads worked by sales, deals that sign annual contracts, and accounts whose hidden health
drives usage, support load, NPS, expansion and closure.

**Hidden.** A lead has a static *intent* and is *warm* until it goes cold for good (a 2% daily hazard,
never shown). Sales works every lead on a fixed cadence from its creation (emails on days 1, 4, 9, 16,
25, 36 and 50; calls on days 2, 8 and 21 for the leads sales scored as priority, a noisy reading of
intent); a warm lead qualifies each day with chance ``intent``, tripled on the day of a call and the
two days after. A qualified deal has a hidden *quality* (from the account's fit, correlated with
intent): it signs at a rate that ramps up over the first 25 days of the sales cycle and scales with
quality, and is lost silently at a rate that falls with quality. A customer account has a *health*
regime, one of five levels, that persists and is redrawn now and then (a 1-in-75 daily chance) from the
account's own distribution (centred on a static baseline): a jump process, not a random walk. Growth
potential, usage habit, size and the contract calendar complete the state.

**Visible.** ``lead_created`` (through web, events or a partner), ``content_download`` and
``webinar_attended`` while warm (lead stage); ``discovery_call`` on qualifying and ``demo_held`` while
the deal is open (qualified stage); outbound ``sales_email``/``sales_call`` from the cadences, the deal's
rep and later the account manager (more calls in the month before a contract anniversary);
``contract_signed`` with the annual contract value (customer stage); then ``product_session`` at a rate
set by habit and health, ``ticket_opened`` more often at low health and ``ticket_resolved`` after a
geometric delay whose daily resolution chance falls with health (open tickets pile up at unhealthy
accounts), NPS answers as three event types ``nps_promoter``/``nps_passive``/``nps_detractor`` (no amount)
drawn from health, ``upsell`` (amount) at a rate rising with health and growth, and at each anniversary
either ``contract_renewal`` (amount) or ``account_closed``. Accounts also close mid-term at a small
health-dependent rate. ``upsell`` and ``contract_renewal`` evidence the expanded stage. 30% of the
accounts were customers before the log starts (2024-01-01); their contracts are not in it, so funnelcast
first sees them when they renew or buy more.

**Truth.** Lead and deal outcomes depend on the future only through deterministic cadences and the
warm/open flag, so they are products of daily survival terms; account outcomes depend on the health
regime (a Markov chain with known per-account redraw distribution) and the anniversary calendar, so
``p_churn`` and ``p_next_stage`` come from an exact forward recursion over the five levels. Unlike
funnelcast's simulator there are no Poisson stage emissions: stages move by scheduled touches and
ramping sales cycles, churn happens at contract anniversaries or by a health-driven mid-term closure,
and the support backlog is a visible queue that only health drives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from funnelcast.features.funnel import FunnelConfig, config_from_dict
from funnelcast.features.snapshots import snapshot_cutoffs
from funnelcast.features.timestamps import DAY_NS
from quality.dataset import QualityDataset

START = pd.Timestamp("2024-01-01", tz="UTC")
END = pd.Timestamp("2025-04-01", tz="UTC")
N_DAYS = (END - START).days
HORIZON = 60
EVERY = 30
ANCHOR = "2024-01-01"
YEAR = 365

STAGES = ("lead", "qualified", "customer", "expanded")
EVENT_TYPES = (
    "lead_created", "content_download", "webinar_attended", "discovery_call", "demo_held", "contract_signed",
    "upsell", "contract_renewal", "product_session", "ticket_opened", "ticket_resolved", "nps_promoter",
    "nps_passive", "nps_detractor", "sales_email", "sales_call", "account_closed",
)
CHANNELS = ("web", "events", "partner", "meeting", "app", "support", "direct", "email", "phone")
INDUSTRIES = ("software", "finance", "healthcare", "retail", "manufacturing")
IND_WEIGHTS = np.array([0.3, 0.2, 0.15, 0.2, 0.15])
IND_INTENT = np.array([1.3, 1.0, 0.8, 0.9, 0.7])
IND_HEALTH = np.array([0.2, 0.1, -0.1, -0.3, 0.0])
REGIONS = ("americas", "emea", "apac")
SOURCES = ("web", "events", "partner")
SRC_WEIGHTS = np.array([0.55, 0.25, 0.2])
SRC_INTENT = np.array([1.0, 0.8, 1.5])

EMAIL_DAYS = (1, 4, 9, 16, 25, 36, 50)
CALL_DAYS = (2, 8, 21)
CALL_BOOST = 3.0
COLD = 0.02
N_H = 5
REDRAW = 1 / 75
MID_CLOSE = np.array([0.005, 0.002, 0.0007, 0.00025, 0.0001])
ANNIV_CLOSE = np.array([0.65, 0.40, 0.18, 0.08, 0.03])
UPSELL = np.array([0.0002, 0.0006, 0.0015, 0.003, 0.0045])
SESSIONS = np.array([0.25, 0.5, 0.8, 1.0, 1.15])
TICKETS = np.array([0.10, 0.06, 0.035, 0.025, 0.02])
RESOLVE = np.array([0.07, 0.12, 0.22, 0.35, 0.50])
PROMOTER = np.array([0.02, 0.10, 0.30, 0.50, 0.70])
DETRACTOR = np.array([0.70, 0.40, 0.15, 0.06, 0.03])

_AGE_MAX = 4 * YEAR
_EMAIL_TABLE = np.isin(np.arange(_AGE_MAX), EMAIL_DAYS)
_CALL_TABLE = np.isin(np.arange(_AGE_MAX), CALL_DAYS)
_BOOST_TABLE = np.where(np.isin(np.arange(_AGE_MAX), [c + k for c in CALL_DAYS for k in range(3)]), CALL_BOOST, 1.0)


def _code(name: str) -> int:
    return EVENT_TYPES.index(name)


def _channel(name: str) -> int:
    return CHANNELS.index(name)


def config() -> FunnelConfig:
    """The funnel config a user would write from this data set's description."""
    return config_from_dict({
        "name": "b2b-journey",
        "stages": [
            {"name": "lead", "event_types": ["lead_created", "content_download", "webinar_attended"]},
            {"name": "qualified", "event_types": ["discovery_call", "demo_held"]},
            {"name": "customer", "event_types": ["contract_signed"]},
            {"name": "expanded", "event_types": ["upsell", "contract_renewal"]},
        ],
        "other_event_types": ["product_session", "ticket_opened", "ticket_resolved", "nps_promoter", "nps_passive",
                              "nps_detractor", "sales_email", "sales_call", "account_closed"],
        "event_groups": {
            "support": ["ticket_opened", "ticket_resolved"],
            "sales_touch": ["sales_email", "sales_call"],
            "nps": ["nps_promoter", "nps_passive", "nps_detractor"],
        },
        "purchase_event_types": ["contract_signed", "upsell", "contract_renewal"],
        "outbound_event_types": ["sales_email", "sales_call"],
        "channels": {"web": "inbound", "events": "inbound", "partner": "inbound", "meeting": "inbound",
                     "app": "inbound", "support": "inbound", "direct": "inbound", "email": "outbound",
                     "phone": "outbound"},
        "conversion": {"horizon_days": HORIZON, "active_within_days": 90},
        "churn": {"definition": "explicit", "horizon_days": HORIZON, "applies_from_stage": "customer",
                  "churn_event_types": ["account_closed"]},
        # Tickets are opened and resolved: the pair the data's description names.
        "features": {"windows_days": [7, 30, 90, 180], "trend_days": 30,
                     "paired_event_types": [{"name": "tickets", "opens": "ticket_opened", "closes": "ticket_resolved"}]},
        "snapshots": {"every_days": EVERY, "anchor_date": ANCHOR, "min_history_days": 45},
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


def _sign_hazard(since_qualified: np.ndarray, quality: np.ndarray) -> np.ndarray:
    ramp = np.clip((since_qualified - 5) / 20.0, 0.0, 1.0)
    return 0.035 * quality * ramp


def _lost_hazard(quality: np.ndarray) -> np.ndarray:
    return 0.006 + 0.012 * (1.0 - quality)


def _is_anniversary(day: int | np.ndarray, signed: np.ndarray) -> np.ndarray:
    age = day - signed
    return (age > 0) & (age % YEAR == 0)


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of (C, L) probabilities."""
    u = rng.random(len(probs))
    return np.minimum((np.cumsum(probs, axis=1) < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def generate(n_accounts: int = 6000, seed: int = 0) -> QualityDataset:
    """Simulate ``n_accounts`` B2B accounts from 2024-01-01 to 2025-04-01 (30% already customers, the
    rest arriving as leads), with exact truth at the config's cutoffs."""
    if n_accounts < 10:
        raise ValueError("the B2B generator needs at least 10 accounts")
    rng = np.random.default_rng(seed)
    cfg = config()
    n = n_accounts
    n_pre = int(round(0.3 * n))
    pre = np.zeros(n, dtype=bool)
    pre[:n_pre] = True

    industry = rng.choice(len(INDUSTRIES), size=n, p=IND_WEIGHTS)
    region = rng.choice(len(REGIONS), size=n, p=[0.5, 0.3, 0.2])
    source = rng.choice(len(SOURCES), size=n, p=SRC_WEIGHTS)
    employees = np.clip(np.rint(np.exp(rng.normal(np.log(120.0), 1.0, n))), 5, 20000)
    size = (employees / 100.0) ** 0.3
    z_intent = rng.normal(0.0, 0.9, n)
    intent = np.minimum(0.006 * np.exp(z_intent) * IND_INTENT[industry] * SRC_INTENT[source], 0.3)
    priority = (z_intent + rng.normal(0.0, 0.8, n)) > 0.3
    fit = 0.6 * z_intent / 0.9 + 0.8 * rng.normal(0.0, 1.0, n)
    quality = 1.0 / (1.0 + np.exp(-(0.3 + 1.2 * fit)))
    baseline = 0.4 * fit + 0.9 * rng.normal(0.0, 1.0, n) + IND_HEALTH[industry]
    centre = 2.4 + 0.9 * baseline
    redraw = np.exp(-0.5 * (np.arange(N_H)[None, :] - centre[:, None]) ** 2)
    redraw /= redraw.sum(axis=1, keepdims=True)  # (n, 5): where a health redraw lands
    growth = np.exp(rng.normal(0.0, 0.6, n)) * (employees / 200.0) ** 0.2
    habit = 0.8 * np.exp(rng.normal(0.0, 0.5, n)) * size
    acv = 8000.0 * (employees / 100.0) ** 0.6 * np.exp(rng.normal(0.0, 0.3, n))

    # Phases: -1 not arrived, 0 warm lead, 1 cold lead, 2 open deal, 3 lost deal, 4 customer, 5 expanded, 6 closed.
    phase = np.full(n, -1, dtype=np.int64)
    created = rng.integers(0, N_DAYS, n)
    qualified = np.full(n, -(10**6), dtype=np.int64)
    signed = np.full(n, -(10**6), dtype=np.int64)
    health = np.zeros(n, dtype=np.int64)
    open_tickets = np.zeros(n, dtype=np.int64)
    expanded_ever = np.zeros(n, dtype=bool)
    # Accounts already customers on day 0: their contracts predate the log.
    signed[pre] = rng.integers(-700, -20, n_pre)
    created[pre] = signed[pre] - rng.integers(30, 120, n_pre)
    expanded_ever[pre] = (signed[pre] <= -YEAR) | (rng.random(n_pre) < 0.25)
    phase[pre] = np.where(expanded_ever[pre], 5, 4)
    health[pre] = _draw(rng, redraw[pre])
    open_tickets[pre] = rng.poisson(TICKETS[health[pre]] * size[pre] / RESOLVE[health[pre]])

    ids = np.array([f"a{i:05d}" for i in rng.permutation(n)], dtype=object)
    log = _Log()
    grid = pd.date_range(ANCHOR, periods=40, freq=f"{EVERY}D", tz="UTC")
    truth_days = {int((c - START).days): c for c in grid if 1 <= (c - START).days <= N_DAYS - HORIZON}
    truth_parts = []
    source_channel = np.array([_channel(s) for s in SOURCES], dtype=np.int64)
    email, phone, meeting, app, support, direct = (_channel(c) for c in ("email", "phone", "meeting", "app", "support", "direct"))

    for d in range(N_DAYS):
        if d in truth_days:
            truth_parts.append(_truth(d, truth_days[d], ids, phase, expanded_ever, created, intent, priority, qualified,
                                      quality, signed, health, redraw, growth))
        new = np.flatnonzero((created == d) & ~pre)
        phase[new] = 0
        log.add(new, d, "lead_created", source_channel[source[new]])

        # Leads: the sales cadence (whether or not the lead is still warm); warm leads engage and qualify.
        leads = np.flatnonzero(((phase == 0) | (phase == 1)) & (created < d))
        age = np.minimum(d - created[leads], _AGE_MAX - 1)
        log.add(leads[_EMAIL_TABLE[age]], d, "sales_email", email)
        log.add(leads[_CALL_TABLE[age] & priority[leads]], d, "sales_call", phone)
        warm = leads[phase[leads] == 0]
        log.add(warm, d, "content_download", _channel("web"), counts=rng.poisson(0.015 + 2.0 * intent[warm]))
        log.add(warm[rng.random(len(warm)) < 0.005 + intent[warm]], d, "webinar_attended", _channel("events"))
        boost = np.where(priority[warm], _BOOST_TABLE[np.minimum(d - created[warm], _AGE_MAX - 1)], 1.0)
        qualifies = rng.random(len(warm)) < np.minimum(intent[warm] * boost, 1.0)
        goes_cold = ~qualifies & (rng.random(len(warm)) < COLD)
        new_deals = warm[qualifies]

        # Open deals: demos and the rep's touches; sign (ramping with the cycle) or be lost silently.
        deals = np.flatnonzero((phase == 2) & (qualified < d))
        log.add(deals[rng.random(len(deals)) < 0.03 + 0.05 * quality[deals]], d, "demo_held", meeting)
        log.add(deals[rng.random(len(deals)) < 0.06], d, "sales_call", phone)
        log.add(deals[rng.random(len(deals)) < 0.12], d, "sales_email", email)
        signs = rng.random(len(deals)) < _sign_hazard(d - qualified[deals], quality[deals])
        lost = ~signs & (rng.random(len(deals)) < _lost_hazard(quality[deals]))
        new_customers = deals[signs]

        # Accounts: usage, tickets and their backlog, NPS, account management; closure, renewal, upsell.
        acc = np.flatnonzero(((phase == 4) | (phase == 5)) & (signed < d))
        h = health[acc]
        log.add(acc, d, "product_session", app, counts=rng.poisson(habit[acc] * SESSIONS[h]))
        resolved = rng.binomial(open_tickets[acc], RESOLVE[h])
        log.add(acc, d, "ticket_resolved", support, counts=resolved)
        opened = rng.poisson(TICKETS[h] * size[acc])
        log.add(acc, d, "ticket_opened", support, counts=opened)
        open_tickets[acc] += opened - resolved
        answers = rng.random(len(acc)) < 1 / 75
        u = rng.random(len(acc))
        log.add(acc[answers & (u < PROMOTER[h])], d, "nps_promoter", email)
        log.add(acc[answers & (u >= PROMOTER[h]) & (u < 1 - DETRACTOR[h])], d, "nps_passive", email)
        log.add(acc[answers & (u >= 1 - DETRACTOR[h])], d, "nps_detractor", email)
        to_anniversary = (YEAR - (d - signed[acc]) % YEAR) % YEAR
        call_p = np.where((to_anniversary > 0) & (to_anniversary <= 30), 1 / 6, 1 / 40)
        log.add(acc[rng.random(len(acc)) < call_p], d, "sales_call", phone)
        log.add(acc[rng.random(len(acc)) < 1 / 14], d, "sales_email", email)
        anniversary = _is_anniversary(d, signed[acc])
        closes = rng.random(len(acc)) < np.where(anniversary, ANNIV_CLOSE[h], MID_CLOSE[h])
        renews = acc[anniversary & ~closes]
        upsells = acc[~anniversary & ~closes & (rng.random(len(acc)) < growth[acc] * UPSELL[h])]
        closing = acc[closes]

        # Apply today's transitions.
        phase[warm[goes_cold]] = 1
        log.add(new_deals, d, "discovery_call", meeting)
        phase[new_deals] = 2
        qualified[new_deals] = d
        phase[deals[lost]] = 3
        log.add(new_customers, d, "contract_signed", direct, amount=acv[new_customers])
        phase[new_customers] = 4
        signed[new_customers] = d
        health[new_customers] = _draw(rng, redraw[new_customers])
        years = (d - signed[renews]) // YEAR
        log.add(renews, d, "contract_renewal", direct, amount=acv[renews] * 1.05 ** years)
        log.add(upsells, d, "upsell", direct, amount=acv[upsells] * 0.3 * np.exp(rng.normal(0.0, 0.3, len(upsells))))
        grown = np.concatenate([renews, upsells])
        phase[grown] = 5
        expanded_ever[grown] = True
        log.add(closing, d, "account_closed", direct)
        phase[closing] = 6

        # Health regimes are redrawn now and then, overnight.
        live = np.flatnonzero((phase == 4) | (phase == 5))
        jump = live[rng.random(len(live)) < REDRAW]
        health[jump] = _draw(rng, redraw[jump])

    events = log.frame(ids, rng, terminal=("account_closed",))
    seen = np.isin(ids, events["customer_id"].unique())
    customers = pd.DataFrame({
        "customer_id": ids,
        "industry": np.array(INDUSTRIES, dtype=object)[industry],
        "region": np.array(REGIONS, dtype=object)[region],
        "lead_source": np.array(SOURCES, dtype=object)[source],
        "employees": employees.astype(np.float64),
    })[seen].sort_values("customer_id").reset_index(drop=True)
    cutoffs = set(snapshot_cutoffs(events["timestamp"].min(), END, cfg))
    truth = pd.concat(truth_parts, ignore_index=True)
    truth = truth[truth["cutoff"].isin(cutoffs)].reset_index(drop=True)
    return QualityDataset(
        name="b2b",
        description=(
            "A B2B sales-led journey, 2024-01-01 to 2025-04-01: leads (lead_created, content downloads, webinars) "
            "are worked by sales (sales_email, sales_call), qualify in a discovery call and demos, sign annual "
            "contracts (contract_signed with the contract value), then expand by upsell or renewal at the "
            "anniversary, or close the account (account_closed). Product sessions, support tickets opened and "
            "resolved, and NPS answers (nps_promoter/passive/detractor) are logged. 30% of the accounts were "
            "customers before the log starts."
        ),
        events=events,
        config=cfg,
        data_end=END,
        customers=customers,
        truth=truth,
        notes=[
            "NPS answers are three event types (nps_promoter, nps_passive, nps_detractor) without amounts",
            "accounts that were customers before 2024-01-01 have no contract_signed in the log: funnelcast sees "
            "them from their first upsell or renewal (stage expanded)",
            "truth is exact given the warm/open flags, health regime, cadences, contract calendar and static traits",
        ],
    )


def _truth(d, cutoff, ids, phase, expanded_ever, created, intent, priority, qualified, quality, signed, health,
           redraw, growth) -> pd.DataFrame:
    """Exact P(next stage within the horizon) and P(closure within the horizon) from the state at the start
    of day ``d`` (the cutoff), for every account with an event before it."""
    seen = np.flatnonzero((phase >= 0) & (created < d))
    ph = phase[seen]
    p_next = np.full(len(seen), np.nan)
    p_churn = np.full(len(seen), np.nan)
    days = d + np.arange(HORIZON)

    # Warm leads: qualify on a day with chance intent * call boost, else go cold with chance COLD.
    rows = np.flatnonzero(ph == 0)
    c = seen[rows]
    age = np.minimum(days[None, :] - created[c][:, None], _AGE_MAX - 1)
    q = np.minimum(intent[c][:, None] * np.where(priority[c][:, None], _BOOST_TABLE[age], 1.0), 1.0)
    p_next[rows] = _first_success(q, np.full_like(q, COLD))
    # Open deals: sign with a ramping chance, else be lost.
    rows = np.flatnonzero(ph == 2)
    c = seen[rows]
    s = _sign_hazard(days[None, :] - qualified[c][:, None], quality[c][:, None])
    p_next[rows] = _first_success(s, np.broadcast_to(_lost_hazard(quality[c])[:, None], s.shape))
    p_next[(ph == 1) | (ph == 3)] = 0.0  # cold leads and lost deals never come back

    # Accounts: forward over the health regimes.
    rows = np.flatnonzero((ph == 4) | (ph == 5))
    c = seen[rows]
    alive = np.zeros((len(c), N_H))
    alive[np.arange(len(c)), health[c]] = 1.0
    waiting = alive * (ph[rows] == 4)[:, None]  # not closed and not yet expanded
    target = redraw[c]
    upsell = growth[c][:, None] * UPSELL[None, :]
    closed = np.zeros(len(c))
    grew = np.zeros(len(c))
    for day in days:
        anniversary = _is_anniversary(day, signed[c])[:, None]
        close = np.where(anniversary, ANNIV_CLOSE[None, :], MID_CLOSE[None, :])
        closed += (alive * close).sum(axis=1)
        alive = alive * (1.0 - close)
        waiting = waiting * (1.0 - close)
        grow = np.where(anniversary, 1.0, upsell)
        grew += (waiting * grow).sum(axis=1)
        waiting = waiting * (1.0 - grow)
        alive = (1.0 - REDRAW) * alive + REDRAW * alive.sum(axis=1, keepdims=True) * target
        waiting = (1.0 - REDRAW) * waiting + REDRAW * waiting.sum(axis=1, keepdims=True) * target
    p_churn[rows] = closed
    p_next[rows] = np.where(ph[rows] == 4, grew, np.nan)
    p_next[(ph == 6) & ~expanded_ever[seen]] = 0.0  # closed while a customer: never expands

    stage = np.select([ph <= 1, ph <= 3, ph == 4, ph == 5], [0, 1, 2, 3], np.where(expanded_ever[seen], 3, 2))
    return pd.DataFrame({
        "customer_id": pd.array(ids[seen], dtype="string"),
        "cutoff": cutoff,
        "stage": pd.Categorical.from_codes(stage, categories=list(STAGES)),
        "p_next_stage": p_next,
        "p_churn": p_churn,
    })


def _first_success(success: np.ndarray, failure: np.ndarray) -> np.ndarray:
    """P(success on some day of the window) when each day first tries ``success`` then, failing it, ends
    the chance for good with ``failure``; (C, T) daily chances."""
    survive = np.cumprod((1.0 - success) * (1.0 - failure), axis=1)
    before = np.concatenate([np.ones((len(success), 1)), survive[:, :-1]], axis=1)
    return (before * success).sum(axis=1)
