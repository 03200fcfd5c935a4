"""BTYD ("buy 'til you die") baselines: BG/NBD, MBG/NBD and Pareto/NBD for repeat purchasing and
Gamma-Gamma for spend, fitted with the maintained ``lifetimes`` fitters on an order history.

They are what a customer-value model has to beat on an order log: each customer buys at a Poisson rate
drawn from a gamma distribution, and drops out for good (after a purchase with a beta-distributed
probability in BG/NBD, at any time in MBG/NBD's variant that can also drop at the start, at an
exponential time in Pareto/NBD); spend per order is gamma-gamma. They see only frequency, recency,
tenure and average spend, computed here with pandas (``lifetimes``' own summary utilities do not run
under pandas 3; its fitters do).

**Purchases are days.** As in ``lifetimes``, a customer's purchases on one calendar day are one
transaction (the day's amounts summed), ``frequency`` counts the purchase days after the first,
``recency`` is from the first purchase day to the last and ``T`` from the first to the last day of the
calibration period, all in periods of ``period_days`` (a week by default).

**P(any purchase in the next t periods).** Pareto/NBD has it in closed form in ``lifetimes``. For
BG/NBD and MBG/NBD a customer can only drop out right after a purchase, so a customer alive at ``T``
makes no purchase in ``(T, T + t]`` exactly when the gamma-Poisson process has no event there:
``P(none) = 1 - P(alive) + P(alive) · ((α + T) / (α + T + t))^(r + x)``, with ``P(alive)`` from the
fitter and the posterior rate gamma(r + x, α + T). That is a prediction from the fitted parameters,
not a likelihood: the fitting is ``lifetimes``'.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np
import pandas as pd

MODELS = ("bg_nbd", "mbg_nbd", "pareto_nbd")
"""The repeat-purchase models, by the names reports and ``--json`` use."""
PERIOD_DAYS = 7.0
RETRY_PENALIZER = 0.001
"""The L2 penalty of the one retry of a fit that did not converge unpenalised."""


def rfm_summary(events: pd.DataFrame, end: Any, *, purchase_types: Iterable[str] | None = None,
                period_days: float = PERIOD_DAYS) -> pd.DataFrame:
    """Per customer with a purchase before ``end`` (exclusive, UTC): ``frequency``, ``recency``, ``T``
    and ``monetary_value`` (the mean spend of the repeat purchase days, 0 without one), indexed by
    ``customer_id`` (module docstring). ``events`` are validated events (``customer_id``,
    ``timestamp``, ``event_type``, ``amount``); ``purchase_types`` limits them to purchases (default:
    every row is a purchase). Missing amounts count as 0 spend."""
    end = pd.Timestamp(end)
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    rows = events
    if purchase_types is not None:
        rows = rows.loc[rows["event_type"].isin(list(purchase_types))]
    when = pd.to_datetime(rows["timestamp"], utc=True)
    rows = pd.DataFrame({"customer_id": rows["customer_id"].astype(str).to_numpy(),
                         "day": when.dt.floor("D").array,
                         "amount": pd.to_numeric(rows["amount"], errors="coerce").fillna(0.0).to_numpy()})
    rows = rows.loc[(when < end).to_numpy()]
    days = rows.groupby(["customer_id", "day"], sort=True)["amount"].sum().reset_index()
    by_customer = days.groupby("customer_id", sort=True)
    first, last = by_customer["day"].min(), by_customer["day"].max()
    period = pd.Timedelta(days=period_days)
    last_day = (end - pd.Timedelta(days=1)).floor("D")  # the calibration period's last day
    summary = pd.DataFrame({
        "frequency": (by_customer.size() - 1).astype(float),
        "recency": (last - first) / period,
        "T": (pd.Series(last_day, index=first.index) - first) / period,
    })
    repeat = days.loc[days["day"] > days["customer_id"].map(first)]
    summary["monetary_value"] = repeat.groupby("customer_id")["amount"].mean().reindex(summary.index).fillna(0.0)
    summary.index.name = "customer_id"
    return summary


@dataclass
class BtydFit:
    """Fitted BTYD models: ``models`` by name (``lifetimes`` fitters), ``errors`` for the ones that did
    not fit (by name: why), and Gamma-Gamma for spend (or why not)."""

    models: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    gamma_gamma: Any = None
    gamma_gamma_error: str | None = None
    period_days: float = PERIOD_DAYS
    notes: dict[str, str] = field(default_factory=dict)
    """Models that fitted only on the retry with a small L2 penalty (by name: what happened)."""

    def params(self) -> dict[str, dict[str, float]]:
        """Every fitted model's parameters (plain floats, for MLflow and reports)."""
        out = {name: {k: float(v) for k, v in m.params_.items()} for name, m in self.models.items()}
        if self.gamma_gamma is not None:
            out["gamma_gamma"] = {k: float(v) for k, v in self.gamma_gamma.params_.items()}
        return out


def _fitters() -> dict[str, Any]:
    from lifetimes import BetaGeoFitter, ModifiedBetaGeoFitter, ParetoNBDFitter

    return {"bg_nbd": BetaGeoFitter, "mbg_nbd": ModifiedBetaGeoFitter, "pareto_nbd": ParetoNBDFitter}


def fit_btyd(summary: pd.DataFrame, models: Iterable[str] = MODELS, *, penalizer: float = 0.0,
             period_days: float = PERIOD_DAYS) -> BtydFit:
    """Fit the repeat-purchase ``models`` and Gamma-Gamma (on customers with a repeat purchase and
    positive spend) to an :func:`rfm_summary`. A model that does not converge is recorded in
    ``errors``, not raised: Pareto/NBD in particular can fail on small or odd data."""
    models = list(models)
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise ValueError(f"unknown BTYD model(s) {unknown}; models are {', '.join(MODELS)}")
    fit = BtydFit(period_days=period_days)
    fitters = _fitters()
    from lifetimes import GammaGammaFitter

    spenders = summary.loc[(summary["frequency"] > 0) & (summary["monetary_value"] > 0)]
    columns = {name: (fitters[name], (summary["frequency"], summary["recency"], summary["T"])) for name in models}
    columns["gamma_gamma"] = (GammaGammaFitter, (spenders["frequency"], spenders["monetary_value"]))
    # lifetimes prints scipy's result to stdout when a fit fails: it would corrupt `funnelcast train --json`.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for name, (fitter, data) in columns.items():
            # lifetimes' optimiser reports non-convergence on some data and CPUs where the likelihood is
            # flat; unpenalised fits that fail are retried once with a small L2 penalty, and say so.
            for coef in dict.fromkeys([penalizer, penalizer or RETRY_PENALIZER]):
                try:
                    fitted = fitter(penalizer_coef=coef).fit(*data)
                except Exception as exc:  # noqa: BLE001 - lifetimes raises ConvergenceError, ValueError, LinAlgError…
                    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    continue
                if coef != penalizer:
                    fit.notes[name] = f"did not converge unpenalised ({error}); fitted with penalizer_coef={coef}"
                break
            else:
                if name == "gamma_gamma":
                    fit.gamma_gamma_error = error
                else:
                    fit.errors[name] = error
                continue
            if name == "gamma_gamma":
                fit.gamma_gamma = fitted
            else:
                fit.models[name] = fitted
    return fit


def predict_btyd(fit: BtydFit, summary: pd.DataFrame, horizon_days: float) -> dict[str, pd.DataFrame]:
    """Per fitted model, per customer of ``summary``: ``p_alive``, ``p_any`` (any purchase in the next
    ``horizon_days``), ``expected_purchases`` and ``expected_spend`` (expected purchases × Gamma-Gamma's
    expected spend per purchase; NaN without Gamma-Gamma)."""
    t = horizon_days / fit.period_days
    x, recency, T = summary["frequency"], summary["recency"], summary["T"]
    spend = None
    if fit.gamma_gamma is not None:
        spend = np.asarray(fit.gamma_gamma.conditional_expected_average_profit(x, summary["monetary_value"]), dtype=float)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, model in fit.models.items():
            alive = np.asarray(model.conditional_probability_alive(x, recency, T), dtype=float)
            expected = np.asarray(model.conditional_expected_number_of_purchases_up_to_time(t, x, recency, T), dtype=float)
            if name == "pareto_nbd":
                none = np.asarray(model.conditional_probability_of_n_purchases_up_to_time(0, t, x, recency, T), dtype=float)
            else:  # module docstring: no purchase in (T, T + t] for a customer alive at T
                r, alpha = float(model.params_["r"]), float(model.params_["alpha"])
                quiet = ((alpha + T.to_numpy()) / (alpha + T.to_numpy() + t)) ** (r + x.to_numpy())
                none = 1 - alive + alive * quiet
            out[name] = pd.DataFrame({
                "p_alive": alive, "p_any": np.clip(1 - none, 0.0, 1.0), "expected_purchases": expected,
                "expected_spend": expected * spend if spend is not None else np.nan,
            }, index=summary.index)
    return out
