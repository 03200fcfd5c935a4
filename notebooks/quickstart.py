# %% [markdown]
# # funnelcast quickstart: train and score from Python
#
# The whole job through the public API, as a notebook (cells are `# %%`; open it in Jupyter with
# jupytext, in VS Code, or run it as a script: `.venv/bin/python notebooks/quickstart.py`).
# It simulates the demo's journeys; put your own event log and customers table in `load`.
#
# Time: features at a cutoff see events strictly before it; labels look at `[cutoff, cutoff + horizon)`
# (30 days for conversion, 60 for churn in the default funnel). A naive `as_of` or `cutoff` is read in
# the funnel's `source_timezone`, else UTC.

# %%
import os
import tempfile
from pathlib import Path

import funnelcast as fc

customers = int(os.environ.get("QUICKSTART_CUSTOMERS", "20000"))
folder = Path(os.environ.get("QUICKSTART_DIR") or tempfile.mkdtemp(prefix="funnelcast-quickstart-"))

# %% A project: a funnel config (the shipped five-stage journey), an MLflow store, a thread budget.
project = fc.Project(mlflow_dir=folder / "mlruns")
project

# %% Data: the demo's simulation, written to files and read back through the event contract.
sim = fc.simulate(customers, project.config, seed=7)
paths = sim.write(folder / "sim")
data = project.load(paths["events"], customers=paths["customers"], as_of=sim.end, truth="auto")
print("\n".join(data.summary.lines()))

# %% Can each target be trained? (history, labelled rows, positives against the config's minimums)
for target in project.check(data).targets:
    print(f"{target.target}: {target.verdict}")

# %% One behaviour vector per customer at a cutoff: what a model sees.
features = project.features(data, cutoff="2025-09-01")
features.head()

# %% Train: backtest, calibrate, register in MLflow, champion or challenger.
result = project.train(data, report_dir=folder / "report")
for name, entry in result.entries.items():
    if name == "value":  # expected spend: ranked by Gini, its total checked against the realised
        print(f"value: test Gini {entry['test_gini']:.3f} (trailing spend {entry['trailing_spend_test_gini']:.3f}), "
              f"total error {entry['test_total_error']:+.1%}, {entry['registered_model']} v{entry['model_version']} {entry['alias']}")
        continue
    print(f"{name}: test ROC-AUC {entry['test_roc_auc']:.3f} (oracle {entry.get('oracle_roc_auc', float('nan')):.3f}), "
          f"ECE {entry['test_ece']:.3f}, {entry['registered_model']} v{entry['model_version']} {entry['alias']}")

# %% Score every customer with the champions, and the outreach list.
scores = project.score(data, as_of=sim.end)
calls = project.outreach(data, top=20, as_of=sim.end)
print(calls[["rank", "customer_id", "stage", "churn_probability", "customer_value", "value_at_risk", "reason_1"]].head(10).to_string())

# %% The registered model alone, as any MLflow user would load it: same probabilities.
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

churn = mlflow.pyfunc.load_model(f"models:/funnelcast-churn/{result.targets['churn'].version}")
latest = project.features(data, cutoff=sim.end)  # the same customers, in the same order, as `scores`
p = np.asarray(churn.predict(latest), dtype=float)
agree = np.array_equal(p, scores["churn_probability"].to_numpy(dtype=float), equal_nan=True)
print(f"MLflow model and batch scores agree: {agree}")
