"""What ranking the outreach list by predicted value at risk changes (issue 19): the spend its top went on to lose.

    python bench/value_at_risk.py [--json] [--datasets simulator cdnow] [--customers 20000]

On data with history after a cutoff t, funnelcast is trained as a user would (``Project``: churn and
value on the events before t only), every customer is scored at t (``Project.customer_base``, what
``funnelcast outreach`` ranks), and the outreach list's customers (status ``customer``: the churn
model scores them) are ranked three ways:

- ``value_at_risk``: churn probability × the value model's expected spend over ``value.horizon_days``
  (the product's ranking);
- ``churn_x_trailing``: churn probability × spend in the same number of days before t (the ranking
  before the value model);
- ``trailing_spend``: spend before t alone.

For the top k of each ranking: the spend they **went on to lose**, per customer
``max(0, spend in the W days before t − spend in the W days after t)`` with W = ``value.horizon_days``
(what the business stopped receiving from them), summed; and, beside it, the share of all the
customers' lost spend that is. Data sets: the simulator (``--customers``, 2024-01-01..2026-01-01,
t = 2025-01-01, W = 365) and CDNOW (t = 1997-10-01, W = 273: the holdout of ``bench/cdnow.py``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # quality/ beside bench/
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/cdnow.py's split

TOPS = (100, 500, 1000)
RANKINGS = ("value_at_risk", "churn_x_trailing", "trailing_spend")


def lost_spend(events: pd.DataFrame, purchase_types: list[str], t: pd.Timestamp, days: int) -> pd.Series:
    """Per customer: max(0, spend in ``[t - days, t)`` - spend in ``[t, t + days)``)."""
    window = pd.Timedelta(days=days)
    buys = events.loc[events["event_type"].isin(purchase_types)]
    amount = pd.to_numeric(buys["amount"], errors="coerce").fillna(0.0)
    before = amount[(buys["timestamp"] >= t - window) & (buys["timestamp"] < t)].groupby(buys["customer_id"]).sum()
    after = amount[(buys["timestamp"] >= t) & (buys["timestamp"] < t + window)].groupby(buys["customer_id"]).sum()
    both = pd.concat([before.rename("before"), after.rename("after")], axis=1).fillna(0.0)
    return (both["before"] - both["after"]).clip(lower=0.0)


def compare(table: pd.DataFrame, lost: pd.Series, trailing: pd.Series, tops=TOPS) -> dict[str, Any]:
    """The lost spend of the top k of each ranking of ``table``'s ``customer`` rows (module docstring)."""
    listed = table.loc[table["status"].eq("customer").to_numpy()].copy()
    ids = listed["customer_id"].astype(str).to_numpy()
    listed["trailing"] = trailing.reindex(ids).fillna(0.0).to_numpy()
    listed["lost"] = lost.reindex(ids).fillna(0.0).to_numpy()
    keys = {"value_at_risk": listed["value_at_risk"], "churn_x_trailing": listed["churn_probability"] * listed["trailing"],
            "trailing_spend": listed["trailing"]}
    total = float(listed["lost"].sum())
    out: dict[str, Any] = {"customers_listed": int(len(listed)), "lost_spend_of_all_listed": round(total, 2),
                           "value_basis": sorted(listed["value_basis"].astype(str).unique())}
    for name, key in keys.items():
        order = np.lexsort((ids, -key.to_numpy(dtype=float)))  # ties by customer id: reproducible
        lost_sorted = listed["lost"].to_numpy()[order]
        out[name] = {f"top_{k}": {"lost_spend": round(float(lost_sorted[:k].sum()), 2),
                                  "share_of_lost": round(float(lost_sorted[:k].sum() / total), 4) if total else None}
                     for k in tops}
    return out


def run_dataset(name: str, events: pd.DataFrame, customers: pd.DataFrame | None, config, t: pd.Timestamp,
                say=lambda msg: None) -> dict[str, Any]:
    """Train on the events before ``t``, score at ``t``, compare the rankings (module docstring)."""
    import funnelcast as fc
    from funnelcast.serving.scoring import trailing_spend

    days = config.value.horizon_days
    with tempfile.TemporaryDirectory(prefix="funnelcast-var-") as store, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        project = fc.Project(config, mlflow_dir=store)
        past = project.load(events.loc[events["timestamp"] < t], customers)
        started = time.perf_counter()
        say(f"{name}: training churn and value on the events before {t:%Y-%m-%d}")
        result = project.train(past, data_end=t, force=True)
        trained = time.perf_counter() - started
        base = project.customer_base(past, as_of=t)
        value = result.targets["value"]
        spec = base.scorer.spec
        trailing = pd.Series(trailing_spend(base.arrays, base.as_of, spec, days), index=base.arrays.customer_ids.astype(str))
    lost = lost_spend(events, list(config.purchase_event_types), t, days)
    out = compare(base.table, lost, trailing)
    out.update({"cutoff": str(t.date()), "window_days": days, "train_seconds": round(trained, 1),
                "value_backtest_gini": round(value.backtest.latest.metrics["funnelcast"]["gini"], 4),
                "value_decay": {k: round(float(v), 4) for k, v in value.backtest.refit["decay"].items()}})
    return out


def simulator(customers: int, say=lambda msg: None) -> dict[str, Any]:
    from funnelcast.features.funnel import load_config
    from funnelcast.features.simulate import simulate

    from funnelcast.features.funnel import FunnelConfig

    raw = load_config().model_dump(mode="json")
    raw["value"]["btyd_baselines"] = []  # not what this bench measures, and Pareto/NBD's fit is slow here
    config = FunnelConfig.model_validate(raw)
    say(f"simulator: {customers:,} customers, 2024-01-01..2026-01-01")
    sim = simulate(customers, config, seed=0, truth=False)
    return run_dataset("simulator", sim.events, sim.customers, config, pd.Timestamp("2025-01-01", tz="UTC"), say)


def cdnow(say=lambda msg: None) -> dict[str, Any]:
    from cdnow import CALIBRATION_END, HOLDOUT_END
    from funnelcast.features.funnel import FunnelConfig, load_config
    from funnelcast.features.orders import orders_to_events
    from quality.cdnow import read_orders

    raw = load_config("order-log").model_dump(mode="json")
    raw["value"] = {"horizon_days": (HOLDOUT_END - CALIBRATION_END).days, "label_days": 90}
    raw["training"]["targets"] = ["churn", "value"]
    raw["value"]["btyd_baselines"] = []  # bench/cdnow.py compares BTYD on this split
    config = FunnelConfig.model_validate(raw)
    orders = read_orders().rename(columns={"date": "timestamp"})
    events = orders_to_events(orders, config)[0]
    return run_dataset("cdnow", events, None, config, CALIBRATION_END, say)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/value_at_risk.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by data set")
    parser.add_argument("--datasets", nargs="+", default=["simulator", "cdnow"], choices=["simulator", "cdnow"])
    parser.add_argument("--customers", type=int, default=20_000, help="simulated customers (default 20,000)")
    args = parser.parse_args(argv)
    say = (lambda msg: print(msg, file=sys.stderr)) if args.json else print
    results = {}
    for name in args.datasets:
        results[name] = simulator(args.customers, say) if name == "simulator" else cdnow(say)
        say(f"{name}: {json.dumps(results[name])}")  # each data set's result as soon as it is known
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for name, r in results.items():
        print(f"\n{name}: cutoff {r['cutoff']}, {r['customers_listed']:,} customers on the outreach list, "
              f"lost spend over the next {r['window_days']} days ${r['lost_spend_of_all_listed']:,.0f} "
              f"(customer_value: {', '.join(r['value_basis'])})")
        print(f"{'ranking':<20}" + "".join(f"{'top ' + str(k):>22}" for k in TOPS))
        for ranking in RANKINGS:
            cells = "".join(f"{'$' + format(r[ranking][f'top_{k}']['lost_spend'], ',.0f') + ' (' + format(r[ranking][f'top_{k}']['share_of_lost'] or 0, '.1%') + ')':>22}"
                            for k in TOPS)
            print(f"{ranking:<20}{cells}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
