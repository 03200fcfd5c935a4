"""funnelcast as a library: a notebook-style session through the public API only, and the defects the
input contract fixed (attributes whose kind serving used to guess, attribute names that clash).

Every import here is from the ``funnelcast`` namespace, as a data scientist's notebook would have it.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import funnelcast as fc

pytestmark = pytest.mark.slow


def quick_config() -> fc.FunnelConfig:
    raw = fc.load_config().model_dump(mode="json")
    raw["training"] |= {"folds": 1, "validation_cutoffs": 1, "lightgbm": {"learning_rate": 0.15, "num_leaves": 7}}
    raw["value"]["btyd_baselines"] = ["bg_nbd"]  # Pareto/NBD's fit takes most of a minute here
    return fc.FunnelConfig.model_validate(raw)


@pytest.fixture(scope="module")
def sim():
    return fc.simulate(2500, fc.load_config(), seed=5)


@pytest.fixture(scope="module")
def notebook(sim, tmp_path_factory):
    """The session of the README's Python API section, on simulated data written to files."""
    folder = tmp_path_factory.mktemp("notebook")
    paths = sim.write(folder / "sim")
    customers = pd.read_parquet(paths["customers"])
    # A numeric attribute whose name starts with days_since_: a number, not a date (the first defect).
    customers["days_since_referral"] = np.where(np.arange(len(customers)) % 3 == 0, np.nan,
                                                np.arange(len(customers)) % 97)
    customers.to_parquet(folder / "customers.parquet", index=False)

    project = fc.Project(quick_config(), mlflow_dir=folder / "mlruns", threads=1)
    data = project.load(paths["events"], customers=folder / "customers.parquet", as_of=sim.end, truth="auto")
    readiness = project.check(data)
    features = project.features(data, cutoff="2025-09-01")
    result = project.train(data, report_dir=folder / "report")
    scores = project.score(data, as_of=sim.end)
    calls = project.outreach(data, top=20, as_of=sim.end)
    return {"project": project, "data": data, "readiness": readiness, "features": features, "result": result,
            "scores": scores, "calls": calls, "folder": folder}


def test_a_notebook_trains_and_scores_through_the_public_api(notebook, sim):
    data, result, scores, calls = notebook["data"], notebook["result"], notebook["scores"], notebook["calls"]
    assert isinstance(data, fc.Dataset) and data.truth is not None  # found beside the events ("auto")
    assert all(t.ready for t in notebook["readiness"].targets)
    assert set(result.targets) == set(fc.TARGETS)
    assert result.entries["churn"]["oracle_roc_auc"] > 0.5  # the truth reached the backtest
    for target in fc.PROBABILITY_TARGETS:
        assert result.entries[target]["test_roc_auc"] > 0.7, target
    value = result.entries["value"]
    assert value["test_gini"] > value["trailing_spend_test_gini"], value  # it ranks spend better than last period's
    assert (scores.loc[scores["status"].isin(["customer", "churned"]), "value_basis"] == "expected_next_365d").all()
    assert len(scores) == len(sim.customers)
    customers = scores["status"].eq("customer")
    assert scores.loc[customers, "churn_probability"].between(0, 1).all()
    assert calls["rank"].tolist() == list(range(1, 21)) and calls["reason_1"].notna().any()
    # The scorer the service would use gives the same probabilities as the batch table.
    scorer = notebook["project"].scorer()
    again = notebook["project"].score(data, as_of=sim.end, scorer=scorer)
    pd.testing.assert_frame_equal(again, scores)


def test_the_quickstart_notebook_runs_as_a_script(tmp_path):
    """notebooks/quickstart.py: the README's Python API, end to end, on a small simulation."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "notebooks" / "quickstart.py"
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env |= {"QUICKSTART_CUSTOMERS": "2000", "QUICKSTART_DIR": str(tmp_path), "FUNNELCAST_THREADS": "1"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "churn: ready" in run.stdout and "funnelcast-churn v1 champion" in run.stdout
    assert "MLflow model and batch scores agree: True" in run.stdout


def test_a_numeric_attribute_named_days_since_is_a_number_from_training_to_serving(notebook, sim):
    """Defect: serving read ``days_since_referral`` as a date column ``referral`` and failed."""
    scorer = notebook["project"].scorer()
    for model in scorer.models.values():
        kinds = {a.name: a.kind for a in model.input_.attributes}
        assert kinds["days_since_referral"] == "number" and kinds["signup_date"] == "date"
        assert "days_since_referral" in model.feature_names_ and "days_since_days_since_referral" not in model.feature_names_
    # The batch table scored (above), and one customer from a request uses the number as sent.
    features = notebook["features"]
    assert features["days_since_referral"].notna().any()
    events = [{"timestamp": "2025-10-01T00:00:00Z", "event_type": "order", "amount": 30.0},
              {"timestamp": "2025-11-20T00:00:00Z", "event_type": "blog_view"}]
    from funnelcast.serving.scoring import Population

    result = scorer.score_payload(events, {"days_since_referral": 12, "segment": "smb"}, "x", "2025-12-01T00:00:00Z",
                                  Population.of(np.array([0.1, 0.5]), 0))
    assert result["churn_probability"] is not None and result["input"]["ignored_attributes"] == []


@pytest.mark.parametrize("column", ["tenure_days", "days_since_last_event", "stage"])
def test_an_attribute_named_like_a_feature_is_refused_by_every_path(sim, column):
    """Defect: build_features refused ``tenure_days`` while build_training_set returned two columns of that name."""
    project = fc.Project(quick_config())
    customers = sim.customers.assign(**{column: 1.0})
    data = project.load(sim.events, customers=customers)
    for step in (lambda: project.features(data, cutoff="2025-06-01"), lambda: project.training_set(data),
                 lambda: project.check(data)):
        with pytest.raises(fc.EventDataError, match=f"attribute '{column}' clashes with"):
            step()


def test_import_funnelcast_loads_nothing_heavy_and_exports_documented_names():
    code = ("import sys, funnelcast; "
            "heavy = [m for m in ('pandas', 'lightgbm', 'mlflow', 'bentoml') if m in sys.modules]; "
            "print(heavy); print(funnelcast.Project.__module__)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = run.stdout.splitlines()
    assert lines[0] == "[]" and lines[1] == "funnelcast.project"
    for name in fc.__all__:
        value = getattr(fc, name)
        if callable(value) and not isinstance(value, dict):
            assert value.__doc__ and len(value.__doc__.strip()) > 20, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        fc.nope  # noqa: B018
