"""Feature values in words a retention agent understands: "no activity for 45 days", "3 support tickets in the last 30 days".

Every phrase is generated from the funnel config's vocabulary (stages, event types, groups, windows),
the same one :func:`features.behaviour.feature_spec` names the columns from, so a business's own
funnel gets its own words. A column no rule knows (a new feature, a customer attribute) still gets a
plain "name: value" phrase rather than nothing.
"""

from __future__ import annotations

import math
from typing import Callable

from funnelcast.features.behaviour import FeatureSpec

Phrase = Callable[[float], str]


def _words(name: str) -> str:
    return name.replace("_", " ")


_PARTICIPLES = ("read", "written", "sent", "made", "done", "seen", "given", "taken")


def _event_noun(name: str) -> str:
    """A countable noun for an event type: "support ticket", or "email opened event" for a participle."""
    words = _words(name)
    last = words.rsplit(" ", 1)[-1]
    return f"{words} event" if last.endswith("ed") or last in _PARTICIPLES else words


def _plural(noun: str, n: float) -> str:
    if round(n) == 1:
        return noun
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    return noun + "s"


def _count(n: float) -> str:
    return f"{n:,.0f}"


def _days(d: float) -> str:
    d = round(d)
    return f"{d:,} day" if d == 1 else f"{d:,} days"


def _window(label: str) -> str:
    return "ever" if label == "all_time" else f"in the last {_days(float(label.removesuffix('d')))}"


def _counted(noun: str, window: str, via: str = "") -> Phrase:
    def phrase(n: float) -> str:
        amount = "no" if n == 0 else _count(n)
        return f"{amount} {_plural(noun, n)}{via} {window}"

    return phrase


def _quiet(what: str, never: str, absent: str | None = None) -> Phrase:
    """Recency of the customer's own activity: "last active 2 days ago", "no activity for 45 days"."""
    def phrase(d: float) -> str:
        if math.isnan(d):
            return never
        return f"last {what} {_days(d)} ago" if d < 7 else f"no {absent or what} for {_days(d)}"

    return phrase


def _since(what: str, never: str) -> Phrase:
    return lambda d: never if math.isnan(d) else f"{what} {_days(d)} ago"


class Phrasebook:
    """Column name → a function from the column's value to a phrase, for one feature spec."""

    def __init__(self, spec: FeatureSpec) -> None:
        cfg = spec.config
        book: dict[str, Phrase] = {}
        stages = cfg.stage_names
        nouns = {t: _event_noun(t) for t in cfg.event_types}
        group_nouns = {f"stage_{s}": f"{_words(s)}-stage event" for s in stages}
        group_nouns |= {g: f"{_words(g)} event" for g in cfg.event_groups}
        group_nouns |= {"activity": "action", "events": "event"}
        for w in spec.window_labels:
            window = _window(w)
            for t, noun in nouns.items():
                book[f"count_{t}_{w}"] = _counted(noun, window)
            for g, noun in group_nouns.items():
                book[f"count_{g}_{w}"] = _counted(noun, window)
            book[f"active_days_{w}"] = (
                lambda n, window=window: f"not active {window}" if n == 0 else f"active on {_count(n)} {_plural('day', n)} {window}"
            )
            book[f"count_inbound_{w}"] = _counted("visit or request of their own", window)
            book[f"count_outbound_{w}"] = _counted("touch from us", window)
            book[f"spend_{w}"] = lambda v, window=window: f"spent {v:,.2f} {window}"
        for c in cfg.channel_names:
            book[f"count_channel_{c}_all_time"] = _counted("event", "ever", via=f" via {_words(c)}")
        book["inbound_share_all_time"] = lambda v: "no contacts yet" if math.isnan(v) else f"{v:.0%} of contacts came from them"
        book["days_since_last_event"] = _quiet("event", "no events yet", "events")
        book["tenure_days"] = _since("first seen", "not seen yet")
        for s in stages:
            book[f"days_since_last_stage_{s}"] = _since(f"last {_words(s)}-stage event", f"never at the {_words(s)} stage")
        for m in spec.marker_names:
            if m == "activity":
                book["days_since_last_activity"] = _quiet("activity", "no activity yet")
            elif m == "purchase":
                book["days_since_last_purchase"] = _quiet("purchase", "never purchased", "purchases")
            else:
                book[f"days_since_last_{m}"] = _since(f"last {_words(m)} event", f"no {_words(m)} events yet")
        book["current_stage"] = lambda v: "no stage yet" if math.isnan(v) else f"at the {_words(stages[int(v)])} stage"
        book["days_in_current_stage"] = lambda d: "no stage yet" if math.isnan(d) else f"{_days(d)} at the current stage"
        for s in stages[1:]:
            book[f"days_to_reach_stage_{s}"] = (
                lambda d, s=s: f"not at the {_words(s)} stage yet" if math.isnan(d) else f"took {_days(d)} to reach {_words(s)}"
            )
        trend = cfg.features.trend_days
        book[f"activity_last_{trend}d"] = _counted("action", f"in the last {_days(trend)}")
        book[f"activity_prev_{trend}d"] = _counted("action", f"in the {_days(trend)} before that")
        book["activity_trend"] = lambda v: (
            "activity steady" if abs(v) < 0.05 else f"activity {'down' if v < 0 else 'up'} {abs(v):.0%} on the month before"
        )
        book["days_since_first_purchase"] = _since("first purchase", "never purchased")
        book["avg_order_value"] = lambda v: "no order values" if math.isnan(v) else f"average order {v:,.2f}"
        book["max_order_value"] = lambda v: "no order values" if math.isnan(v) else f"largest order {v:,.2f}"
        book["mean_days_between_purchases"] = (
            lambda d: "only one purchase" if math.isnan(d) else f"buys every {_days(d)} on average"
        )
        book["std_days_between_purchases"] = (
            lambda d: "only one purchase" if math.isnan(d) else f"gaps between purchases vary by {_days(d)}"
        )
        book["last_days_between_purchases"] = (
            lambda d: "only one purchase" if math.isnan(d) else f"last gap between purchases {_days(d)}"
        )
        self._add_family_phrases(spec, book, nouns, group_nouns)
        self._book = book
        # Features that state the same fact (recency of activity, one event type over several windows)
        # share a concept, so a customer's reasons are different facts, not one fact three ways.
        concept: dict[str, str] = {}
        for w in spec.window_labels:
            concept |= {f"count_{t}_{w}": f"type:{t}" for t in cfg.event_types}
            concept |= {f"count_stage_{s}_{w}": f"stage:{s}" for s in stages}
            concept |= {f"count_{g}_{w}": f"group:{g}" for g in cfg.event_groups}
            concept |= {f"count_{g}_{w}": "activity" for g in ("activity", "events", "inbound")}
            concept |= {f"active_days_{w}": "activity", f"count_outbound_{w}": "outbound", f"spend_{w}": "spend"}
        concept |= {f"days_since_last_stage_{s}": f"stage:{s}" for s in stages}
        concept |= {f"days_since_last_{g}": f"group:{g}" for g in cfg.event_groups}
        concept |= {c: "activity" for c in ("days_since_last_event", "days_since_last_activity", f"activity_last_{trend}d",
                                            f"activity_prev_{trend}d", "activity_trend")}
        concept |= {c: "purchase" for c in ("days_since_last_purchase", "days_since_first_purchase")}
        concept |= {c: "purchase_rhythm" for c in ("mean_days_between_purchases", "std_days_between_purchases",
                                                   "last_days_between_purchases")}
        self._concept = concept | self._family_concepts(spec)

    @staticmethod
    def _add_family_phrases(spec: FeatureSpec, book: dict[str, Phrase], nouns: dict[str, str], group_nouns: dict[str, str]) -> None:
        """Phrases for the optional feature families (features.families), for the columns the spec has."""
        cfg = spec.config
        on = spec.layout
        marker_nouns = group_nouns | {"purchase": "purchase"}
        if "type_recency" in on:
            for t, noun in nouns.items():
                never = f"no {_plural(noun, 2)} yet"
                book[f"days_since_last_type_{t}"] = _since(f"last {noun}", never)
                book[f"days_since_first_type_{t}"] = _since(f"first {noun}", never)
        if "rates" in on:
            book["rate_activity_per_tenure_day"] = (
                lambda v: "not seen yet" if math.isnan(v) else f"{v:,.2g} actions a day since first seen"
            )
            book["rate_activity_per_active_day"] = (
                lambda v: "not seen yet" if math.isnan(v) else f"{v:,.2g} actions per active day"
            )
            book["rate_purchases_per_tenure_day"] = lambda v: (
                "not seen yet" if math.isnan(v) else "no purchases since first seen" if v == 0
                else f"a purchase every {_days(1 / v)} since first seen"
            )
            book["rate_purchases_per_active_day"] = (
                lambda v: "not seen yet" if math.isnan(v) else f"{v:,.2g} purchases per active day"
            )
        if "decay" in on:
            for h in cfg.features.decay_half_lives_days:
                for g, noun in group_nouns.items():
                    book[f"decayed_{g}_half_life_{h}d"] = (
                        lambda v, noun=noun, h=h: f"{v:,.1f} recency-weighted {_plural(noun, v)} (half-life {_days(h)})"
                    )
        if "gaps" in on:
            for g in [f"stage_{s}" for s in cfg.stage_names] + list(spec.marker_names):
                noun = marker_nouns[g]
                many = _plural(noun, 2)
                rare = f"fewer than two days with {many}"
                book[f"mean_gap_days_{g}"] = (
                    lambda d, many=many, rare=rare: rare if math.isnan(d) else f"{many} usually every {_days(d)}"
                )
                book[f"last_gap_days_{g}"] = (
                    lambda d, many=many, rare=rare: rare if math.isnan(d) else f"last gap between {many} {_days(d)}"
                )
                book[f"overdue_{g}"] = lambda v, noun=noun, rare=rare: (
                    rare if math.isnan(v)
                    else f"{noun} overdue: {v:,.1f} times the usual gap since the last" if v >= 1
                    else f"next {noun} not due yet ({v:.0%} of the usual gap since the last)"
                )
        if "trends" in on:
            trend = _days(cfg.features.trend_days)

            def trended(many: str) -> Phrase:
                # v = (last - prev) / (last + prev), so last / prev = (1 + v) / (1 - v).
                def phrase(v: float) -> str:
                    if abs(v) < 0.05:
                        return f"{many} steady on the {trend} before"
                    if v >= 1:
                        return f"{many} in the last {trend}, none in the {trend} before"
                    if v <= -1:
                        return f"no {many} in the last {trend}, after some in the {trend} before"
                    change = 2 * v / (1 - v)
                    return f"{many} {'down' if change < 0 else 'up'} {abs(change):.0%} on the {trend} before"

                return phrase

            for g in [f"stage_{s}" for s in cfg.stage_names] + list(cfg.event_groups):
                book[f"{g}_trend"] = trended(_plural(group_nouns[g], 2))
            book["spend_trend"] = trended("spend")
        if "pairs" in on:
            for pair in cfg.features.paired_event_types:
                noun = nouns[pair.opens]
                none_open = f"no {_plural(noun, 2)} open"
                book[f"open_{pair.name}"] = (
                    lambda n, noun=noun, none_open=none_open: none_open if n == 0 else f"{_count(n)} {_plural(noun, n)} open"
                )
                book[f"days_since_oldest_open_{pair.name}"] = (
                    lambda d, noun=noun, none_open=none_open: none_open if math.isnan(d) else f"a {noun} open for {_days(d)}"
                )
        if "diversity" in on:
            for w in spec.window_labels[-2:]:
                book[f"distinct_event_types_{w}"] = (
                    lambda n, window=_window(w): f"{_count(n)} {_plural('kind', n)} of event {window}"
                )
        if "calendar" in on:
            # Each column alone does not name a date; together they are the season the score is for.
            for c in ("cutoff_year_sin", "cutoff_year_cos"):
                book[c] = lambda v: "the time of year"

    @staticmethod
    def _family_concepts(spec: FeatureSpec) -> dict[str, str]:
        """The fact each optional family's column states (see ``concept``)."""
        cfg = spec.config
        on = spec.layout
        stages = cfg.stage_names
        fact = {f"stage_{s}": f"stage:{s}" for s in stages} | {g: f"group:{g}" for g in cfg.event_groups}
        fact |= {"activity": "activity", "events": "activity", "purchase": "purchase_rhythm"}
        concept: dict[str, str] = {}
        if "type_recency" in on:
            concept |= {f"days_since_{w}_type_{t}": f"type:{t}" for w in ("last", "first") for t in cfg.event_types}
        if "rates" in on:
            concept |= {f"rate_activity_per_{d}": "activity" for d in ("tenure_day", "active_day")}
            concept |= {f"rate_purchases_per_{d}": "purchase_rhythm" for d in ("tenure_day", "active_day")}
        if "decay" in on:
            half_lives = cfg.features.decay_half_lives_days
            concept |= {f"decayed_{g}_half_life_{h}d": fact[g] for g in spec.group_names for h in half_lives}
        if "gaps" in on:
            for g in [f"stage_{s}" for s in stages] + list(spec.marker_names):
                rhythm = "purchase_rhythm" if g == "purchase" else f"rhythm:{g}"
                concept |= {f"{what}_{g}": rhythm for what in ("mean_gap_days", "last_gap_days", "overdue")}
        if "trends" in on:
            concept |= {f"{g}_trend": fact[g] for g in [f"stage_{s}" for s in stages] + list(cfg.event_groups)}
            concept["spend_trend"] = "spend"
        if "pairs" in on:
            for pair in cfg.features.paired_event_types:
                concept |= {f"{what}_{pair.name}": f"open:{pair.name}" for what in ("open", "days_since_oldest_open")}
        if "diversity" in on:
            concept |= {f"distinct_event_types_{w}": "diversity" for w in spec.window_labels[-2:]}
        if "calendar" in on:
            concept |= {"cutoff_year_sin": "calendar", "cutoff_year_cos": "calendar"}
        return concept

    def concept(self, column: str) -> str:
        """The fact a column states; reasons for one customer name each fact once."""
        return self._concept.get(column, column)

    def phrase(self, column: str, value: object) -> str:
        """The words for ``column`` = ``value`` (a category, a number, or NaN for missing)."""
        rule = self._book.get(column)
        if rule is not None and isinstance(value, (int, float)):
            return rule(float(value))
        if column.startswith("days_since_") and isinstance(value, (int, float)):
            what = _words(column.removeprefix("days_since_"))
            return f"no {what} yet" if math.isnan(value) else f"{what} {_days(value)} ago"
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{_words(column)} unknown"
        if isinstance(value, float):
            return f"{_words(column)} {value:,.4g}"
        return f"{_words(column)}: {value}"
