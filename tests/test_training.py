"""The training job end to end on a small simulation: a real embedded MLflow store (SQLite + local
artifacts), real LightGBM, real registry aliases. No mocks."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from funnelcast.features.funnel import FunnelConfig
from funnelcast.features.snapshots import TrainingSet, build_features
from funnelcast.features.targets import TARGETS
from funnelcast.training.backtest import TrainingDataError, run_backtest
from funnelcast.training.metrics import binary_metrics
from funnelcast.training.train import decide, train

pytestmark = pytest.mark.slow


def with_training(config: FunnelConfig, readiness: dict | None = None, **changes) -> FunnelConfig:
    raw = config.model_dump(mode="json")
    raw["training"].update(changes)
    raw["readiness"].update(readiness or {})
    return FunnelConfig.model_validate(raw)


def quick(config: FunnelConfig, **changes) -> FunnelConfig:
    """Fewer folds and faster boosting, for tests about the job's logic rather than model quality."""
    return with_training(config, **{"folds": 1, "lightgbm": {"learning_rate": 0.15, "num_leaves": 7}, **changes})


@pytest.fixture(scope="module")
def sim(small_sim):
    return small_sim


@pytest.fixture(scope="module")
def table(small_table):
    return small_table


@pytest.fixture(scope="module")
def trained(tmp_path_factory, table, sim, config):
    home = tmp_path_factory.mktemp("mlruns")
    result = train(table, config, truth=sim.truth, events=sim.events, customers=sim.customers, home=home,
                   report_dir=home / "report")
    return result, home


def test_every_target_and_transition_is_reported_with_the_promised_fields(trained, config):
    result, _ = trained
    entries = json.loads(json.dumps(result.as_dict()))  # what --json prints must be plain JSON
    transitions = [f"convert:{a}->{b}" for a, b in config.conversion_targets()]
    assert set(entries) == {"convert", "churn", "value", *transitions}
    value = entries.pop("value")
    for field in ("test_mae", "test_rmse", "test_total_error", "test_spearman", "test_gini", "test_top_10pct_share",
                  "test_top_20pct_share", "trailing_spend_test_gini", "lifetime_rate_test_gini", "mbg_nbd_test_gini",
                  "pareto_nbd_test_gini", "backtest_gini_mean", "label_days", "horizon_days", "refit", "mlflow_run_id",
                  "model_version", "alias"):
        assert field in value, field
    assert value["registered_model"] == "funnelcast-value" and value["alias"] == "champion"
    assert (value["label_days"], value["horizon_days"]) == (90, 365) and value["estimate"] == "out-of-time"
    # The value model ranks the next 90 days' spend better than the plain baselines and BTYD do.
    for other in ("trailing_spend", "lifetime_rate", "mbg_nbd", "pareto_nbd"):
        assert value["test_gini"] > value[f"{other}_test_gini"], other
    for key, entry in entries.items():
        for field in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "test_top_decile_lift",
                      "logistic_test_roc_auc", "recency_frequency_test_roc_auc", "oracle_roc_auc", "mlflow_run_id",
                      "model_version", "alias"):
            assert field in entry, (key, field)
        assert 0.5 < entry["test_roc_auc"] <= 1.0, key
        assert entry["alias"] == "champion"
    assert entries["churn"]["registered_model"] == "funnelcast-churn"
    assert entries["convert:purchase->loyalty"]["mlflow_run_id"] == entries["convert"]["mlflow_run_id"]


def test_models_beat_the_heuristic_and_stay_below_the_oracle_and_are_calibrated(trained):
    result, _ = trained
    for target in ("convert", "churn"):
        e = result.entries[target]
        assert e["test_roc_auc"] > e["recency_frequency_test_roc_auc"], target
        # The oracle knows the hidden state: no model can beat it by more than sampling noise.
        assert e["test_roc_auc"] < e["oracle_roc_auc"] + 0.01, target
        assert e["gap_to_oracle_roc_auc"] == pytest.approx(e["oracle_roc_auc"] - e["test_roc_auc"], abs=1e-5)
        assert e["test_ece"] < 0.04, target
        # Calibrated: the mean probability on the test cutoff is close to the observed rate.
        latest = result.targets[target].backtest.latest
        assert abs(latest.scores["p_funnelcast"].mean() - latest.scores["label"].mean()) < 0.03


def test_folds_are_time_ordered_with_a_horizon_gap(trained, table, config):
    result, _ = trained
    for target, horizon in (("convert", config.conversion.horizon_days), ("churn", config.churn.horizon_days)):
        folds = [fr.fold for fr in result.targets[target].backtest.folds]
        assert len(folds) == config.training.folds
        gap = pd.Timedelta(days=horizon)
        for f in folds:
            assert max(f.train) + gap <= min(f.valid)
            assert max(f.valid) + gap <= f.test
        assert [f.test for f in folds] == sorted(f.test for f in folds)
        # The latest fold tests on the latest cutoff whose labels are complete.
        assert folds[-1].test == table.rows(target)["cutoff"].max()


def test_mlflow_holds_params_metrics_artifacts_and_a_loadable_registered_model(trained, table):
    result, home = trained
    client = mlflow.MlflowClient()
    value = result.targets["value"]
    run = client.get_run(value.run_id)
    assert run.data.params["target"] == "value" and run.data.params["champion_metric"] == "gini"
    assert run.data.metrics["test_gini"] == pytest.approx(result.entries["value"]["test_gini"], abs=1e-6)
    # The BTYD baselines are fitted on the same data and logged in the same run.
    assert {"btyd/bg_nbd/gini", "btyd/pareto_nbd/mae", "backtest/trailing_spend/gini_mean"} <= set(run.data.metrics)
    assert {"fold_0/funnelcast/gini", "test/lifetime_rate/mae"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(value.run_id)} | {
        a.path for a in client.list_artifacts(value.run_id, "report")}
    assert {"value_btyd.json", "report/report_value.html", "report/value_lorenz.png"} <= artifacts
    loaded = mlflow.pyfunc.load_model(f"models:/{value.model_name}@champion")
    rows = table.rows("value").tail(200)
    np.testing.assert_allclose(np.asarray(loaded.predict(rows)), value.model.predict(rows), rtol=1e-12)
    for target, tr in result.targets.items():
        if target == "value":
            continue
        run = client.get_run(tr.run_id)
        assert run.data.params["target"] == target
        assert "lgbm_learning_rate" in run.data.params
        assert run.data.metrics["test_roc_auc"] == pytest.approx(result.entries[target]["test_roc_auc"], abs=1e-6)
        assert any(k.startswith("fold_0/") for k in run.data.metrics)
        assert "backtest/funnelcast/roc_auc_mean" in run.data.metrics
        if target == "convert":  # every fold's and the latest fold's metrics per stage transition
            assert any(k.startswith("fold_0/convert_") for k in run.data.metrics)
            assert any(k.startswith("test/convert_") and k.endswith("/roc_auc") for k in run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(tr.run_id, "report")}
        assert f"report/report_{target}.html" in artifacts
        assert {f"report/{target}_{p}.png" for p in ("calibration", "gains", "feature_importance", "shap_summary")} <= artifacts
        version = client.get_model_version(tr.model_name, tr.version)
        assert version.tags["target"] == target
        assert version.tags["config_hash"] == tr.backtest.model.config_hash_ and len(tr.backtest.model.config_hash_) == 64
        assert str(client.get_model_version_by_alias(tr.model_name, "champion").version) == tr.version
        # The registered model scores exactly like the in-memory one, through MLflow's pyfunc and signature.
        loaded = mlflow.pyfunc.load_model(f"models:/{tr.model_name}@champion")
        assert loaded.metadata.signature is not None
        rows = table.rows(target).tail(200)
        np.testing.assert_allclose(np.asarray(loaded.predict(rows)), tr.backtest.model.predict_proba(rows), rtol=1e-12)
    parent = client.get_run(result.parent_run_id)
    parent_artifacts = {a.path for a in client.list_artifacts(result.parent_run_id)}
    assert {"funnel_config.json", "data_summary.json"} <= parent_artifacts
    assert len(parent.data.params["input_hash"]) == 64
    assert (home / "mlflow.db").exists()


def test_report_is_written_with_the_tables_a_retention_lead_reads(trained):
    result, _ = trained
    html = result.targets["churn"].report.read_text()
    for heading in ("Targeting trade-off", "Score deciles", "Test metrics", "Backtest"):
        assert heading in html
    assert "data:image/png;base64," in html


def test_same_data_config_and_seed_give_the_same_metrics(table, config):
    cfg = quick(config, folds=2)
    first = run_backtest(table, "churn", cfg)
    second = run_backtest(table, "churn", cfg)
    for a, b in zip(first.folds, second.folds):
        assert a.metrics == b.metrics
    np.testing.assert_array_equal(first.latest.scores["p_funnelcast"], second.latest.scores["p_funnelcast"])
    np.testing.assert_array_equal(first.model.predict_proba(table.rows("churn")), second.model.predict_proba(table.rows("churn")))


def test_champion_challenger_and_force(tmp_path, table, config):
    home = tmp_path / "mlruns"
    only_churn = quick(config, targets=["churn"])
    first = train(table, only_churn, home=home, report_dir=tmp_path / "r1")
    assert set(first.targets) == {"churn"} and first.targets["churn"].decision.alias == "champion"
    # A much weaker model (LightGBM alone, one stump) is worse beyond the tolerance: challenger. Same data, so
    # no cutoff is unseen by the champion: both runs' backtests are compared on the same latest test cutoff.
    weak = quick(config, targets=["churn"], learners=["lightgbm"], lightgbm={"n_estimators": 1, "num_leaves": 2})
    second = train(table, weak, home=home, report_dir=tmp_path / "r2")
    decision = second.targets["churn"].decision
    assert decision.alias == "challenger"
    assert "worse than the champion" in decision.reason and "roc_auc" in decision.reason
    assert "same latest test cutoff" in decision.reason
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("funnelcast-churn", "champion").version) == first.targets["churn"].version
    assert str(client.get_model_version_by_alias("funnelcast-churn", "challenger").version) == second.targets["churn"].version
    assert "challenger" in second.targets["churn"].report.read_text()
    # --force promotes whatever the comparison says.
    third = train(table, weak, home=home, report_dir=tmp_path / "r3", force=True)
    assert third.targets["churn"].decision.alias == "champion"
    assert str(client.get_model_version_by_alias("funnelcast-churn", "champion").version) == third.targets["churn"].version


def test_decide_applies_the_tolerance_in_the_metric_direction():
    assert decide(0.80, 0.804, "roc_auc", 0.005, False, "3").alias == "champion"
    assert decide(0.79, 0.804, "roc_auc", 0.005, False, "3").alias == "challenger"
    assert decide(0.30, 0.296, "log_loss", 0.005, False, "3").alias == "champion"
    assert decide(0.31, 0.296, "log_loss", 0.005, False, "3").alias == "challenger"
    assert decide(0.1, None, "roc_auc", 0.005, False, None).reason == "no champion yet"
    assert decide(0.1, 0.9, "roc_auc", 0.005, True, "3").alias == "champion"
    problem = decide(0.9, None, "roc_auc", 0.005, False, "3", problem="missing columns")
    assert problem.alias == "challenger" and "missing columns" in problem.reason


def test_a_target_with_too_few_positives_is_skipped_with_the_counts(tmp_path, table, config):
    churn_positives = int(table.frame["churn_label"].sum())
    strict = quick(config, readiness={"min_positives": churn_positives + 1})
    convert_positives = int(table.frame["convert_label"].sum())
    assert convert_positives > churn_positives  # so conversion still trains
    result = train(table, strict, home=tmp_path / "mlruns", report_dir=tmp_path / "r")
    assert "churn" not in result.targets and "convert" in result.targets
    assert f"{churn_positives:,} positives" in result.skipped["churn"]
    assert result.entries["churn"] == {"skipped": result.skipped["churn"]}
    assert any("skipped churn" in w for w in result.warnings)


def test_no_trainable_target_or_no_rows_is_a_clear_error(tmp_path, table, config):
    hopeless = quick(config, readiness={"min_positives": 10**9})
    with pytest.raises(TrainingDataError, match="no target has enough labelled data.*positives"):
        train(table, hopeless, home=tmp_path / "mlruns")
    with pytest.raises(TrainingDataError, match="training set is empty"):
        train(TrainingSet(table.frame.iloc[:0], table.model_input, table.data_end), config, home=tmp_path / "mlruns")


def test_a_single_class_fold_is_a_clear_error(table, config):
    frame = table.frame.copy()
    frame["churn_label"] = frame["churn_label"].where(frame["churn_label"].isna(), 0).astype("Int8")
    one_class = TrainingSet(frame, table.model_input, table.data_end)
    with pytest.raises(TrainingDataError, match="labelled rows with 0 positives cannot be split into folds that each "
                                                "hold both classes: in-time fold 0: .* left out: its training rows"):
        run_backtest(one_class, "churn", quick(config))


def _first_cutoffs(table: TrainingSet, n: int) -> TrainingSet:
    """The training set as it would be with only the first ``n`` labelled cutoffs."""
    keep = sorted(table.frame["cutoff"].unique())[:n]
    return TrainingSet(table.frame[table.frame["cutoff"].isin(keep)], table.model_input, table.data_end)


def test_the_registered_model_is_refitted_on_every_labelled_cutoff(table, config):
    cfg = quick(config, folds=2, validation_cutoffs=1)
    backtest = run_backtest(table, "churn", cfg)
    rows = table.rows("churn")
    refit, model = backtest.refit, backtest.model
    assert backtest.kind == "out-of-time" and len(backtest.folds) == 2
    assert refit["rows"] == len(rows) and refit["cutoffs"] == rows["cutoff"].nunique()
    assert pd.Timestamp(refit["last_training_cutoff"]) == rows["cutoff"].max() == backtest.latest.fold.test
    assert model.booster_.num_trees() == refit["rounds"] == int(np.median([f.model.best_iteration_ for f in backtest.folds]))
    assert model is not backtest.latest.model and model.learner_ == backtest.learner
    # Calibrated on the fold models' out-of-fold scores at the latest cutoffs: the folds' test cutoffs.
    assert [pd.Timestamp(c) for c in refit["calibration_cutoffs"]] == [f.fold.test for f in backtest.folds]
    assert refit["calibration_rows"] == sum(len(f.scores) for f in backtest.folds)
    # Every learner was fitted and scored on every fold; the selected one is reported as funnelcast.
    for fr in backtest.folds:
        assert {"funnelcast", "lightgbm", "logistic", "blend", "recency_frequency"} <= set(fr.metrics)
        assert fr.metrics["funnelcast"] == fr.metrics[backtest.learner]
    assert backtest.selection[backtest.learner] == max(backtest.selection.values())


def test_a_short_history_still_trains_with_fewer_folds_or_an_in_time_estimate_and_says_so(tmp_path, table, config):
    cfg = quick(config, folds=3, validation_cutoffs=2)
    horizon = pd.Timedelta(days=config.churn.horizon_days)
    cuts = sorted(table.rows("churn")["cutoff"].unique())
    assert cuts[1] - cuts[0] < horizon  # so three cutoffs cannot hold a training, validation and test cutoff apart
    short = run_backtest(_first_cutoffs(table, 3), "churn", cfg)
    assert short.kind == "in-time" and all(f.fold.in_time for f in short.folds)
    assert any("IN-TIME estimate" in w for w in short.warnings)
    assert short.refit["estimate"] == "in-time" and short.refit["rows"] == len(_first_cutoffs(table, 3).rows("churn"))
    assert 0.6 < short.latest.metrics["funnelcast"]["roc_auc"] <= 1
    # Through the training job: trained, registered, and the estimate named in the entry, the MLflow run and the report.
    small = quick(config, folds=3, targets=["churn"], readiness={"min_eligible": 100, "min_positives": 10})
    result = train(_first_cutoffs(table, 3), small, home=tmp_path / "mlruns",
                   report_dir=tmp_path / "r")
    entry = result.entries["churn"]
    assert entry["estimate"] == "in-time" and "IN-TIME" in entry["estimate_notes"][0]
    run = mlflow.MlflowClient().get_run(entry["mlflow_run_id"])
    assert run.data.params["estimate"] == "in-time" and "IN-TIME" in run.data.tags["funnelcast.estimate_notes"]
    assert "Quality estimate: IN-TIME" in result.targets["churn"].report.read_text()


def test_labels_are_the_ones_the_feature_pipeline_built(table):
    for target, spec in TARGETS.items():
        rows = table.rows(target)
        assert rows[spec.label].notna().all() and rows[spec.eligible_column].all()  # a known label: the target applied
        if spec.is_probability:
            assert set(rows[spec.label].unique()) <= {0, 1}
        else:  # spend: never negative, positive for some
            assert (rows[spec.label] >= 0).all() and (rows[spec.label] > 0).any()


def _latest_customers(result, target, n, sim):
    """(model, latest test cutoff, n customer ids of its test rows, their events before it, their attributes)."""
    backtest = result.targets[target].backtest
    cutoff = backtest.latest.fold.test
    ids = backtest.latest.scores["customer_id"].head(n).tolist()
    ev = sim.events[(sim.events["timestamp"] < cutoff) & sim.events["customer_id"].isin(ids)].copy()
    ev["customer_id"] = ev["customer_id"].astype(str)
    return backtest.model, cutoff, ids, ev, sim.customers[sim.customers["customer_id"].isin(ids)]


def _score(model, events, customers, cutoff, config, ids):
    """The model's probabilities for ``ids``, from funnelcast.features built at ``cutoff`` like serving builds them."""
    return model.predict_proba(build_features(events, customers, cutoff, config).set_index("customer_id").loc[ids])


def test_behaviour_a_fresh_visit_does_not_raise_churn_risk(trained, sim, config):
    """Direction: the same customers with one extra product-page visit yesterday look less likely to churn."""
    result, _ = trained
    model, cutoff, ids, ev, customers = _latest_customers(result, "churn", 300, sim)
    visit = pd.DataFrame({"customer_id": ids, "timestamp": cutoff - pd.Timedelta(days=1),
                          "event_type": "blog_view", "channel": "direct", "amount": np.nan})
    visit = visit.astype({c: ev[c].dtype for c in ("timestamp", "amount")})
    fresher = pd.concat([ev, visit], ignore_index=True).sort_values(["customer_id", "timestamp"], kind="stable")
    before = _score(model, ev, customers, cutoff, config, ids)
    after = _score(model, fresher, customers, cutoff, config, ids)
    assert after.mean() < before.mean() - 0.02
    assert (after <= before + 0.02).mean() > 0.9


def test_behaviour_renaming_customers_changes_no_score(trained, sim, config):
    """Invariance: scores depend on behaviour, not on the customer's id."""
    result, _ = trained
    model, cutoff, ids, ev, customers = _latest_customers(result, "convert", 200, sim)
    renamed_ids = {i: f"zz-{i[::-1]}" for i in ids}
    ev2 = ev.assign(customer_id=ev["customer_id"].map(renamed_ids)).sort_values(["customer_id", "timestamp"], kind="stable")
    cust2 = customers.assign(customer_id=customers["customer_id"].map(renamed_ids))
    a = _score(model, ev, customers, cutoff, config, ids)
    b = _score(model, ev2, cust2, cutoff, config, [renamed_ids[i] for i in ids])
    np.testing.assert_array_equal(a, b)


def test_tuning_runs_optuna_trials_as_nested_mlflow_runs(tmp_path, table, config):
    cfg = quick(config, targets=["churn"])
    result = train(table, cfg, home=tmp_path / "mlruns", report_dir=tmp_path / "r", tune_trials=2)
    tuned = result.targets["churn"].tuned
    assert tuned["trials"] == 2 and tuned["best_valid_log_loss"] > 0
    assert set(tuned["params"]) >= {"learning_rate", "num_leaves", "min_child_samples"}
    client = mlflow.MlflowClient()
    run = client.get_run(result.targets["churn"].run_id)
    trials = client.search_runs([run.info.experiment_id], filter_string="tags.`funnelcast.trial` != ''")
    assert len(trials) == 2
    assert all(t.data.tags["mlflow.parentRunId"] == run.info.run_id for t in trials)
    assert all("valid_log_loss" in t.data.metrics for t in trials)
    # The best trial's parameters trained the registered model.
    assert run.data.params["lgbm_num_leaves"] == str(tuned["params"]["num_leaves"])


def test_a_registered_model_holds_no_pickle_and_a_changed_artifact_is_refused(tmp_path, table, config):
    """Issue 21: LightGBM's text model and JSON, read by models-from-code; every artifact's SHA-256 is
    recorded with the version and checked on load, so a planted or edited file is refused by name."""
    from funnelcast.training import tracking

    cfg = quick(config, targets=["churn"])
    result = train(table, cfg, home=tmp_path / "mlruns", report_dir=tmp_path / "r")
    tr = result.targets["churn"]
    folder = tracking._model_folder(tr.model_name, tr.version)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib", ".cloudpickle"))], files
    assert {"MLmodel", "artifacts/booster.txt", "artifacts/model.json", "mlflow_model.py"} <= set(files)
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in (folder / "MLmodel").read_text()
    # The loaded model is the trained one, to the bit.
    version, loaded = tracking.load_model(tr.model_name, "champion")
    rows = table.rows("churn").tail(500)
    np.testing.assert_array_equal(loaded.predict_proba(rows), tr.backtest.model.predict_proba(rows))
    assert loaded.input_ == tr.backtest.model.input_
    # Tampering with any artifact (the model, the code MLflow runs, MLflow's own descriptor) is refused.
    for name in ("artifacts/booster.txt", "mlflow_model.py", "MLmodel"):
        path = folder / name
        original = path.read_bytes()
        path.write_bytes(original + b"\n# planted\n")
        with pytest.raises(tracking.RegistryError, match=f"the artifact '{name}' differs from the one logged"):
            tracking.load_model(tr.model_name, "champion")
        path.write_bytes(original)
    (folder / "artifacts" / "model.json").unlink()
    with pytest.raises(tracking.RegistryError, match="the artifact 'artifacts/model.json' is missing"):
        tracking.load_model(tr.model_name, "champion")


def test_a_champion_trained_on_older_data_is_compared_on_cutoffs_neither_model_trained_on(tmp_path, table, config):
    cfg = quick(config, folds=2, validation_cutoffs=1, targets=["churn"])
    cuts = sorted(table.rows("churn")["cutoff"].unique())
    home = tmp_path / "mlruns"
    older = train(_first_cutoffs(table, len(cuts) - 2), cfg, home=home, report_dir=tmp_path / "r1")
    assert pd.Timestamp(older.targets["churn"].model.metadata_["refit"]["last_training_cutoff"]) == cuts[-3]
    newer = train(table, cfg, home=home, report_dir=tmp_path / "r2")
    decision = newer.targets["churn"].decision
    # The new backtest's two test cutoffs are the two the champion never trained on: both models are scored there.
    assert f"2 test cutoffs ({cuts[-2]:%Y-%m-%d}, {cuts[-1]:%Y-%m-%d}) that neither the champion nor" in decision.reason
    rows = table.rows("churn")
    unseen = rows[rows["cutoff"].isin(cuts[-2:])]
    champion = older.targets["churn"].model
    expected = binary_metrics(unseen["churn_label"].to_numpy(dtype=int), champion.predict_proba(unseen))["roc_auc"]
    assert decision.champion_score == pytest.approx(expected, abs=1e-12)


def test_a_champion_carried_to_a_longer_horizon_is_judged_on_its_label_window(tmp_path, sim, config):
    """Under conversion.label_days the labels are the shorter window: a probability metric (Brier)
    compares the champion's label-window probabilities with them, not its horizon's (off by the map)."""
    from funnelcast.features.snapshots import build_training_set

    raw = quick(config, folds=2, validation_cutoffs=1, targets=["convert"], champion_metric="brier").model_dump(mode="json")
    raw["conversion"].update(horizon_days=60, label_days=30)
    cfg = FunnelConfig.model_validate(raw)
    full = build_training_set(sim.events, sim.customers, cfg, data_end=sim.end)
    cuts = sorted(full.rows("convert")["cutoff"].unique())
    home = tmp_path / "mlruns"
    older = train(_first_cutoffs(full, len(cuts) - 2), cfg, home=home, report_dir=tmp_path / "r1")
    champion = older.targets["convert"].model
    assert champion.horizon_map_ is not None and champion.horizon_map_.horizon_days == 60
    decision = train(full, cfg, home=home, report_dir=tmp_path / "r2").targets["convert"].decision
    assert "that neither the champion nor" in decision.reason
    rows = full.rows("convert")
    unseen = rows[rows["cutoff"].isin(cuts[-2:])]
    y = unseen["convert_label"].to_numpy(dtype=int)
    expected = binary_metrics(y, champion.predict_proba(unseen, label_window=True))["brier"]
    assert decision.champion_score == pytest.approx(expected, abs=1e-12)
    assert binary_metrics(y, champion.predict_proba(unseen))["brier"] > expected + 0.005  # the horizon's would lose
