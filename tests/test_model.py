"""The fitted target model and its baselines (training/model.py, training/baselines.py).

The input contract (features/model_input.py: kinds, vocabularies, the frame-to-matrix conversion) is
checked on hand-built frames; the calibrator
on samples from a known logistic model; LightGBM and the baselines on a small synthetic churn table
whose generating probabilities are known, for reproducibility, invariance, direction and minimum
functionality.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from funnelcast.features.events import validate_customers
from funnelcast.features.funnel import load_config
from funnelcast.features.model_input import Attribute, ModelInput, SchemaError
from funnelcast.training.baselines import RecencyFrequency
from funnelcast.training.linear import LinearModel, signed_log
from funnelcast.training.metrics import expected_calibration_error
from funnelcast.training.model import (PROBABILITY_FLOOR, YEAR_NS, Calibrator, SeasonalShift, TargetModel, cutoff_ns,
                                       fit_target_model)

FAST = {"n_estimators": 200, "learning_rate": 0.1, "min_child_samples": 40}
PLAN_EFFECT = {"basic": 1.5, "plus": 0.0, "pro": -1.5}


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def churn_table(rows: int, seed: int) -> pd.DataFrame:
    """Synthetic training-set rows. Churn rises with days since last activity, falls with activity
    count, and depends strongly on the plan (a pandas categorical); conversion runs the other way."""
    rng = np.random.default_rng(seed)
    days = rng.exponential(25.0, rows)
    days[rng.random(rows) < 0.05] = np.nan  # never active
    count_90 = rng.poisson(4.0, rows).astype(float)
    plan = rng.choice(list(PLAN_EFFECT), rows)
    staleness = np.nan_to_num(days, nan=120.0)
    churn_logit = -0.8 + 0.04 * staleness - 0.3 * count_90 + np.vectorize(PLAN_EFFECT.get)(plan)
    convert_logit = -0.5 - 0.04 * staleness + 0.3 * count_90
    return pd.DataFrame({
        "customer_id": [f"c{seed}-{i:05d}" for i in range(rows)],
        "cutoff": pd.Timestamp("2024-03-01", tz="UTC"),
        "stage": "interest",
        "days_since_last_activity": days,
        "count_activity_90d": count_90,
        "noise": rng.normal(size=rows),
        "plan": pd.Categorical(plan, categories=list(PLAN_EFFECT)),
        "churn_label": pd.array((rng.random(rows) < _sigmoid(churn_logit)).astype(int), dtype="Int8"),
        "convert_label": pd.array((rng.random(rows) < _sigmoid(convert_logit)).astype(int), dtype="Int8"),
    })


CHURN_INPUT = ModelInput(("days_since_last_activity", "count_activity_90d", "noise"),
                         [Attribute("plan", "category", ("basic", "plus", "pro"))])


def to_matrix(frame: pd.DataFrame, behaviour: list[str], categories: dict[str, list[str]]) -> np.ndarray:
    """``frame``'s matrix under an input contract of ``behaviour`` numbers and category attributes."""
    attributes = [Attribute(c, "category", tuple(v)) for c, v in categories.items()]
    return ModelInput(behaviour, attributes).matrix_from_frame(frame)


# --- the input contract: kinds and vocabularies ---------------------------------------------------

def test_model_input_records_each_attributes_kind_from_the_validated_table() -> None:
    config = load_config(None).model_copy(update={"source_timezone": "Europe/Berlin"})
    raw = pd.DataFrame({
        "customer_id": ["a", "b", "c"],
        "plan": pd.Categorical(["pro", "basic", "pro"], categories=["pro", "basic", "unused"]),
        "seats": [3, 1, 2],
        "signup_date": ["2024-01-02", "2024-02-03", None],
        "days_since_referral": [4.0, None, 10.0],  # a number, whatever its name says
    })
    customers, _ = validate_customers(raw, config)
    model_input = ModelInput.fit(config, customers)
    assert [(a.name, a.kind, a.categories) for a in model_input.attributes] == [
        ("plan", "category", ("basic", "pro")),  # the values validation saw, sorted
        ("seats", "number", ()),
        ("signup_date", "date", ()),
        ("days_since_referral", "number", ()),
    ]
    assert model_input.columns[-4:] == ("plan", "seats", "days_since_signup_date", "days_since_referral")
    assert model_input.timezone == "Europe/Berlin" and model_input.config_hash == config.data_hash()
    # JSON in, JSON out: nothing in it executes on load.
    import json

    again = ModelInput.from_dict(json.loads(json.dumps(model_input.to_dict())))
    assert again == model_input and again.columns == model_input.columns


@pytest.mark.parametrize(("column", "clash"), [
    ("tenure_days", "a behaviour feature"),
    ("stage", "a column funnelcast adds"),
    ("churn_label", "a column funnelcast adds"),
    ("convert_eligible", "a column funnelcast adds"),
])
def test_model_input_refuses_an_attribute_named_like_another_column(column: str, clash: str) -> None:
    config = load_config(None)
    customers, _ = validate_customers(pd.DataFrame({"customer_id": ["a"], column: [3.0]}), config)
    with pytest.raises(SchemaError, match=f"attribute '{column}' clashes with {clash}"):
        ModelInput.fit(config, customers)


def test_model_input_refuses_two_attributes_with_one_feature_name() -> None:
    with pytest.raises(SchemaError, match=r"attribute 'days_since_joined' clashes with the feature of attribute 'joined'"):
        ModelInput(("count",), [Attribute("joined", "date"), Attribute("days_since_joined", "number")])


# --- frame to matrix ------------------------------------------------------------------------------

def test_to_matrix_codes_categories_in_vocabulary_order() -> None:
    frame = pd.DataFrame({
        "count": [2.0, np.nan, 0.0, 5.5],
        "plan": pd.Categorical(["basic", "pro", None, "pro"], categories=["basic", "pro"]),
        "visits": pd.array([1, None, 3, 4], dtype="Int8"),
        "channel": pd.Series(["web", "app", "app", None], dtype=object),
    })
    # The vocabulary's order, not the frame's category order, decides the codes.
    X = to_matrix(frame, ["count", "visits"], {"plan": ["pro", "basic"], "channel": ["app", "web"]})
    expected = np.array([
        [2.0, 1.0, 1.0, 1.0],
        [np.nan, np.nan, 0.0, 0.0],
        [0.0, 3.0, np.nan, 0.0],
        [5.5, 4.0, 0.0, np.nan],
    ])
    assert X.dtype == np.float64
    np.testing.assert_array_equal(X, expected)


def test_to_matrix_unseen_categories_become_missing() -> None:
    frame = pd.DataFrame({"plan": pd.Categorical(["gold", "pro", "basic"]), "channel": ["fax", "web", "app"]})
    X = to_matrix(frame, [], {"plan": ["basic", "pro"], "channel": ["app", "web"]})
    np.testing.assert_array_equal(X, [[np.nan, np.nan], [1.0, 1.0], [0.0, 0.0]])


def test_to_matrix_unseen_categories_do_not_rely_on_deprecated_pandas() -> None:
    frame = pd.DataFrame({"plan": ["gold", "pro"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = to_matrix(frame, [], {"plan": ["basic", "pro"]})
    np.testing.assert_array_equal(X, [[np.nan], [1.0]])


def test_to_matrix_names_a_numeric_column_holding_text() -> None:
    frame = pd.DataFrame({"a": ["1.5", "n/a"]})
    with pytest.raises(SchemaError, match="feature column 'a' must be numeric; row 1 holds 'n/a'"):
        to_matrix(frame, ["a"], {})


def test_to_matrix_ignores_column_order_and_extra_columns() -> None:
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"], "extra": [9, 9]})
    vocab = {"b": ["x", "y"]}
    np.testing.assert_array_equal(to_matrix(frame[["extra", "b", "a"]], ["a"], vocab), to_matrix(frame, ["a"], vocab))


def test_to_matrix_names_missing_and_unknown_columns() -> None:
    frame = pd.DataFrame({"customer_id": ["c1"], "count": [1.0], "tenure": [3.0]})
    with pytest.raises(SchemaError, match=r"lacks 2 feature column\(s\) the model was fitted on: \['recency', 'plan'\]"
                                          r"; it has 1 the model does not know: \['tenure'\]"):
        to_matrix(frame, ["count", "recency"], {"plan": ["basic"]})
    with pytest.raises(SchemaError, match=r"lacks 1 feature column\(s\) the model was fitted on: \['plan'\]\. Build"):
        to_matrix(frame[["customer_id", "count"]], ["count"], {"plan": ["basic"]})


# --- calibration ----------------------------------------------------------------------------------

def _logistic_sample(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.uniform(-4.0, 4.0, rows)
    return raw, (rng.random(rows) < _sigmoid(raw)).astype(float)


def test_isotonic_calibrator_is_monotone_without_collapsing_scores() -> None:
    raw, y = _logistic_sample(2000, seed=0)
    calibrator = Calibrator("isotonic").fit(raw, y)
    grid = np.linspace(np.quantile(raw, 0.2), np.quantile(raw, 0.8), 200)
    p = calibrator.predict(grid)
    assert np.all(np.diff(calibrator.predict(np.linspace(-6, 6, 1000))) >= 0)
    # Strictly increasing inside the fitted range: 200 distinct raw scores, 200 distinct probabilities.
    assert np.all(np.diff(p) > 0)
    assert len(np.unique(p)) == 200
    # Plain isotonic regression is a step function on the same data: the property is not free.
    plain = IsotonicRegression(out_of_bounds="clip").fit(raw, y).predict(grid)
    assert len(np.unique(plain)) < 100


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibrated_probabilities_stay_off_zero_and_one(method: str) -> None:
    # Perfectly separated validation labels would make a calibrator certain.
    raw = np.linspace(-5, 5, 200)
    y = (raw > 0).astype(float)
    p = Calibrator(method).fit(raw, y).predict(np.linspace(-50, 50, 101))
    assert p.min() == pytest.approx(PROBABILITY_FLOOR)
    assert p.max() == pytest.approx(1 - PROBABILITY_FLOOR)
    assert np.all((p >= PROBABILITY_FLOOR) & (p <= 1 - PROBABILITY_FLOOR))


@pytest.mark.parametrize("method", ["isotonic", "sigmoid"])
def test_calibration_repairs_a_misscaled_score(method: str) -> None:
    rng = np.random.default_rng(11)
    true_logit = rng.normal(0.0, 1.5, 40_000)
    y = (rng.random(true_logit.size) < _sigmoid(true_logit)).astype(float)
    raw = 3.0 * true_logit  # ranks perfectly but is far too confident
    fit_half, check_half = slice(0, 20_000), slice(20_000, None)
    assert expected_calibration_error(y[check_half], _sigmoid(raw[check_half])) > 0.1
    calibrator = Calibrator(method).fit(raw[fit_half], y[fit_half])
    assert expected_calibration_error(y[check_half], calibrator.predict(raw[check_half])) < 0.02


def test_per_stage_correction_calibrates_each_stage_without_reordering_it() -> None:
    """One score serves several stages whose base rates differ at equal scores: the global map is right
    on average and off inside each stage; the per-stage Platt step fixes each stage it has rows for."""
    rng = np.random.default_rng(4)
    n = 30_000
    stage = rng.integers(0, 3, n).astype(float)
    raw = rng.normal(0, 1.2, n)
    shift = np.array([-1.2, 0.0, 1.0])[stage.astype(int)]  # what the shared score does not see
    y_of = lambda r, s: (rng.random(len(r)) < 1 / (1 + np.exp(-(r + s)))).astype(float)  # noqa: E731
    y = y_of(raw, shift)
    stage[:150] = 3.0  # a stage with too few rows keeps the global map
    plain = Calibrator("isotonic").fit(raw, y)
    staged = Calibrator("isotonic").fit(raw, y, stage)
    assert sorted(staged.segments_) == [0, 1, 2]
    test_raw = rng.normal(0, 1.2, n)
    test_stage = rng.integers(0, 3, n).astype(float)
    test_y = y_of(test_raw, np.array([-1.2, 0.0, 1.0])[test_stage.astype(int)])
    for s in range(3):
        rows = test_stage == s
        before = expected_calibration_error(test_y[rows], plain.predict(test_raw[rows]))
        after = expected_calibration_error(test_y[rows], staged.predict(test_raw[rows], test_stage[rows]))
        assert after < 0.02 < before and after < before / 1.5, (s, before, after)
        order = np.argsort(test_raw[rows])  # monotone within a stage: its ranking (and ROC-AUC) is unchanged
        assert np.all(np.diff(staged.predict(test_raw[rows], test_stage[rows])[order]) >= 0)
    # Rows of a stage without a correction, or without a stage, get the global map.
    few = np.array([3.0, np.nan])
    np.testing.assert_array_equal(staged.predict(np.array([0.3, 0.3]), few), plain.predict(np.array([0.3, 0.3])))
    again = Calibrator.from_dict(json.loads(json.dumps(staged.to_dict())))
    np.testing.assert_array_equal(again.predict(test_raw, test_stage), staged.predict(test_raw, test_stage))


def _seasonal_world(rng, cutoffs, n=3000):
    """Rows at monthly ``cutoffs``: a score the model sees, two stages, and in stage 1 a holiday rush
    (log-odds +0.5 at cutoffs from 15 November to 31 December) that the score does not see."""
    at = np.repeat(cutoff_ns(pd.Series(cutoffs)), n)
    when = pd.to_datetime(pd.Series(at), utc=True)
    stage = rng.integers(0, 2, len(at)).astype(float)
    raw = rng.normal(-1.5, 1.0, len(at))
    holiday = (((when.dt.month == 11) & (when.dt.day >= 15)) | (when.dt.month == 12)).to_numpy()
    truth = 1 / (1 + np.exp(-(raw + np.where((stage == 1) & holiday, 0.5, 0.0))))
    return at, stage, raw, truth, (rng.random(len(at)) < truth).astype(float)


def test_seasonal_shift_takes_the_rush_from_a_year_earlier_and_nothing_from_noise() -> None:
    rng = np.random.default_rng(8)
    cutoffs = pd.date_range("2024-01-20", "2025-10-20", freq="30D", tz="UTC")
    at, stage, raw, _, y = _seasonal_world(rng, cutoffs)
    latest = at >= cutoff_ns(pd.Series(cutoffs[-3:]))[0]  # calibrated on the latest three cutoffs (Aug-Oct)
    calibrator = Calibrator("isotonic").fit(raw[latest], y[latest], stage[latest])
    shift = SeasonalShift.fit(calibrator.predict(raw, stage), y, stage, at, at[latest])
    assert shift.reference == sorted(set(at[latest].tolist())) and shift.tolerance == 15 * 86_400 * 10**9
    calibrator.seasonal_ = shift
    # Scored at the start of the next rush: stage 1 moves up by about the rush, stage 0 does not move.
    t_at, t_stage, t_raw, t_truth, _ = _seasonal_world(rng, pd.DatetimeIndex(["2025-11-19"], tz="UTC"), n=20_000)
    plain = calibrator.predict(t_raw, t_stage)
    seasonal = calibrator.predict(t_raw, t_stage, at=t_at)
    rush = t_stage == 1
    assert 0.3 < shift.offset(1, int(t_at[0])) < 0.7 and abs(shift.offset(0, int(t_at[0]))) < 0.03
    assert ece_vs(t_truth[rush], plain[rush]) > 0.05 and ece_vs(t_truth[rush], seasonal[rush]) < 0.02
    assert np.abs(seasonal[~rush] - plain[~rush]).max() < 0.01
    # Where no cutoff sits a year before (or a calibration cutoff has no counterpart), nothing moves.
    assert shift.offset(1, int(cutoff_ns(pd.Series(pd.DatetimeIndex(["2024-11-19"], tz="UTC")))[0])) == 0.0
    assert shift.offset(1, int(t_at[0]) + 3 * YEAR_NS + 40 * 86_400 * 10**9) == 0.0  # past every year tried
    # Scored in a season like the calibration cutoffs': the year-ago gap is noise, shrunk to (nearly) nothing.
    for day in ("2025-08-20", "2025-09-04", "2025-10-01"):
        t = int(cutoff_ns(pd.Series(pd.DatetimeIndex([day], tz="UTC")))[0])
        assert abs(shift.offset(0, t)) < 0.05 and abs(shift.offset(1, t)) < 0.05, day
    # Saved and loaded, the same numbers.
    again = Calibrator.from_dict(json.loads(json.dumps(calibrator.to_dict())))
    np.testing.assert_array_equal(again.predict(t_raw, t_stage, at=t_at), seasonal)


def ece_vs(truth: np.ndarray, p: np.ndarray) -> float:
    """ECE with the true probabilities in place of outcomes (the bins of ``p``)."""
    return expected_calibration_error(truth, p)


def test_unknown_calibration_method() -> None:
    with pytest.raises(ValueError, match=r"calibration method 'bogus': use 'isotonic' or 'sigmoid'"):
        Calibrator("bogus")


# --- the LightGBM target model --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {"train": churn_table(3000, seed=1), "valid": churn_table(1500, seed=2), "test": churn_table(2000, seed=3)}


def _fit(tables: dict[str, pd.DataFrame], seed: int = 0) -> TargetModel:
    return fit_target_model("churn", tables["train"], tables["valid"], CHURN_INPUT, FAST, seed=seed,
                            early_stopping_rounds=20, threads=1)


@pytest.fixture(scope="module")
def churn_model(tables: dict[str, pd.DataFrame]) -> TargetModel:
    return _fit(tables)


def test_target_model_remembers_what_it_saw(churn_model: TargetModel) -> None:
    assert churn_model.target == "churn"
    assert churn_model.feature_names_ == ["days_since_last_activity", "count_activity_90d", "noise", "plan"]
    assert churn_model.categories_ == {"plan": ["basic", "plus", "pro"]}
    assert 1 <= churn_model.best_iteration_ <= FAST["n_estimators"]


def test_target_model_is_reproducible(tables: dict[str, pd.DataFrame], churn_model: TargetModel) -> None:
    expected = churn_model.predict_proba(tables["test"], num_threads=1)
    np.testing.assert_array_equal(_fit(tables, seed=0).predict_proba(tables["test"], num_threads=1), expected)
    # The seed is used (row and column subsampling), so the equality above is not vacuous.
    assert not np.array_equal(_fit(tables, seed=5).predict_proba(tables["test"], num_threads=1), expected)


def test_target_model_ranks_held_out_rows(tables: dict[str, pd.DataFrame], churn_model: TargetModel) -> None:
    test = tables["test"]
    p = churn_model.predict_proba(test, num_threads=1)
    assert np.all((p >= PROBABILITY_FLOOR) & (p <= 1 - PROBABILITY_FLOOR))
    assert roc_auc_score(test["churn_label"].to_numpy(dtype=int), p) > 0.7


def test_target_model_ignores_column_order(tables: dict[str, pd.DataFrame], churn_model: TargetModel) -> None:
    test = tables["test"]
    shuffled = test[list(np.random.default_rng(0).permutation(test.columns))]
    assert list(shuffled.columns) != list(test.columns)
    np.testing.assert_array_equal(churn_model.predict_proba(shuffled, num_threads=1),
                                  churn_model.predict_proba(test, num_threads=1))


def test_target_model_uses_the_categorical_plan(tables: dict[str, pd.DataFrame], churn_model: TargetModel) -> None:
    # Same customers, only the plan changed: basic (+1.5 on the churn logit) must score above pro (-1.5).
    test = tables["test"]
    on_plan = {
        plan: churn_model.predict_proba(test.assign(plan=pd.Categorical([plan] * len(test))), num_threads=1).mean()
        for plan in ("basic", "pro")
    }
    assert on_plan["basic"] > on_plan["pro"] + 0.1


def test_target_model_refuses_a_frame_missing_a_feature(tables: dict[str, pd.DataFrame],
                                                        churn_model: TargetModel) -> None:
    with pytest.raises(SchemaError, match=r"lacks 1 feature column\(s\) the model was fitted on: \['count_activity_90d'\]"):
        churn_model.predict_proba(tables["test"].drop(columns="count_activity_90d"))


# --- the logistic learner and the blend ------------------------------------------------------------

@pytest.fixture(scope="module")
def logistic_model(tables: dict[str, pd.DataFrame]) -> TargetModel:
    return fit_target_model("churn", tables["train"], tables["valid"], CHURN_INPUT, FAST, learner="logistic",
                            early_stopping_rounds=20, threads=1)


def test_logistic_learner_ranks_and_tolerates_unseen_categories(tables: dict[str, pd.DataFrame],
                                                                logistic_model: TargetModel) -> None:
    test = tables["test"].copy()
    assert logistic_model.learner_ == "logistic" and not logistic_model.uses_booster
    p = logistic_model.predict_proba(test)
    assert np.all((p > 0) & (p < 1))
    assert roc_auc_score(test["churn_label"].to_numpy(dtype=int), p) > 0.7
    # The categorical one-hot is used: identical numbers, plan basic scores above plan pro.
    row = test.iloc[[0, 0]].copy()
    row["plan"] = pd.Categorical(["basic", "pro"])
    basic, pro = logistic_model.raw_score(logistic_model.matrix(row))
    assert basic > pro
    # A plan that did not exist at fit time, and a missing plan, still score.
    test["plan"] = test["plan"].cat.add_categories(["enterprise"])
    test.loc[test.index[:5], "plan"] = "enterprise"
    test.loc[test.index[5:10], "plan"] = np.nan
    q = logistic_model.predict_proba(test)
    assert np.all(np.isfinite(q) & (q > 0) & (q < 1))
    np.testing.assert_allclose(q[10:], p[10:])


def test_linear_model_arrays_are_the_scikit_learn_pipeline_they_came_from(tables: dict[str, pd.DataFrame]) -> None:
    """The numpy scorer (serving, reasons, JSON files) computes exactly what scikit-learn fitted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    from funnelcast.training.linear import C

    X = CHURN_INPUT.matrix_from_frame(tables["train"])
    X[::7, 0] = np.nan  # missing values: imputed, and flagged
    y = tables["train"]["churn_label"].to_numpy(dtype=int)
    linear = LinearModel.fit(X, y, {3: 2}, seed=0)
    pipeline = make_pipeline(
        ColumnTransformer([
            ("numbers", make_pipeline(SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                                      FunctionTransformer(lambda a: np.hstack([signed_log(a[:, :3]), a[:, 3:]])),
                                      ColumnTransformer([("z", StandardScaler(), [0, 1, 2])], remainder="passthrough")),
             [0, 1, 2]),
            ("plan", OneHotEncoder(categories=[[0.0, 1.0]], handle_unknown="ignore"), [3]),
        ]),
        LogisticRegression(C=C, max_iter=500, random_state=0),
    ).fit(X, y)
    test = CHURN_INPUT.matrix_from_frame(tables["test"])
    test[::5, 0] = np.nan
    # Inside the range training saw, the same numbers; outside it each value is clipped to that range.
    inside = np.all(np.isnan(test[:, :3]) | ((test[:, :3] >= np.nanmin(X[:, :3], axis=0))
                                               & (test[:, :3] <= np.nanmax(X[:, :3], axis=0))), axis=1)
    assert 0 < inside.sum() < len(test)
    np.testing.assert_allclose(linear.raw_score(test[inside]), pipeline.decision_function(test[inside]), atol=1e-6)
    clipped = np.where(np.isnan(test[:, :3]), np.nan,
                       np.clip(test[:, :3], np.nanmin(X[:, :3], axis=0), np.nanmax(X[:, :3], axis=0)))
    np.testing.assert_allclose(linear.raw_score(test), pipeline.decision_function(np.hstack([clipped, test[:, 3:]])),
                               atol=1e-6)
    far = test[:1].copy()
    far[0, :3] = np.nanmax(X[:, :3], axis=0) * 1000  # far past training: no further than its edge
    edge = test[:1].copy()
    edge[0, :3] = np.nanmax(X[:, :3], axis=0)
    np.testing.assert_allclose(linear.raw_score(far), linear.raw_score(edge), rtol=1e-12)
    # Credits add up to the log-odds, and survive the JSON round trip bit for bit.
    np.testing.assert_allclose(linear.baseline + linear.contributions(test).sum(axis=1), linear.raw_score(test), atol=1e-12)
    again = LinearModel.from_dict(json.loads(json.dumps(linear.to_dict())))
    np.testing.assert_array_equal(again.raw_score(test), linear.raw_score(test))


def test_blend_is_the_mean_of_both_log_odds_and_saves_and_loads(tables: dict[str, pd.DataFrame], tmp_path) -> None:
    blend = fit_target_model("churn", tables["train"], tables["valid"], CHURN_INPUT, FAST, learner="blend",
                             early_stopping_rounds=20, threads=1)
    X = blend.matrix(tables["test"])
    assert blend.learner_ == "blend"
    np.testing.assert_allclose(blend.raw_score(X), 0.5 * blend.booster_raw(X) + 0.5 * blend.linear_.raw_score(X))
    credit = blend.credits(np.zeros_like(X), X)
    np.testing.assert_allclose(credit, 0.5 * blend.linear_.contributions(X))
    # Contributions computed once (serving shares them between the score and the reasons): the same numbers.
    shared = blend.linear_contributions(X)
    np.testing.assert_array_equal(blend.credits(np.zeros_like(X), X, shared), credit)
    tree = blend.booster_raw(X)
    np.testing.assert_array_equal(blend.combine(tree, X, shared), blend.combine(tree, X))
    assert fit_target_model("churn", tables["train"], tables["valid"], CHURN_INPUT, FAST, learner="lightgbm",
                            early_stopping_rounds=20, threads=1).linear_contributions(X) is None
    paths = blend.save(tmp_path / "blend")
    loaded = TargetModel.load(paths["booster"], paths["model"])
    np.testing.assert_array_equal(loaded.predict_proba(X), blend.predict_proba(X))
    assert loaded.learner_ == "blend" and loaded.calibrator_.segments_ == blend.calibrator_.segments_


def _customers(days: list[float], counts: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"days_since_last_activity": days, "count_activity_90d": counts})


def test_recency_frequency_reads_the_longest_window() -> None:
    heuristic = RecencyFrequency(load_config(None), "churn")
    assert (heuristic.recency, heuristic.frequency) == ("days_since_last_activity", "count_activity_90d")


def test_recency_frequency_direction(tables: dict[str, pd.DataFrame]) -> None:
    config = load_config(None)
    # Engaged (active 2 days ago, 12 events) versus lapsed (80 days ago, 1 event).
    pair = _customers([2.0, 80.0], [12.0, 1.0])
    churn = RecencyFrequency(config, "churn").fit(tables["valid"])
    engaged, lapsed = churn.predict_proba(pair)
    assert lapsed > engaged
    convert = RecencyFrequency(config, "convert").fit(tables["valid"])
    engaged, lapsed = convert.predict_proba(pair)
    assert engaged > lapsed
    # Each signal on its own moves the raw score the right way.
    assert np.all(np.diff(churn.score(_customers([1.0, 10.0, 100.0], [3.0, 3.0, 3.0]))) > 0)
    assert np.all(np.diff(churn.score(_customers([10.0, 10.0, 10.0], [0.0, 5.0, 50.0]))) < 0)
    assert np.all(np.diff(convert.score(_customers([1.0, 10.0, 100.0], [3.0, 3.0, 3.0]))) < 0)


def test_recency_frequency_treats_never_active_as_stale(tables: dict[str, pd.DataFrame]) -> None:
    churn = RecencyFrequency(load_config(None), "churn").fit(tables["valid"])
    frame = _customers([np.nan, 365.0, 5.0], [0.0, 0.0, 0.0])
    never, year, recent = churn.score(frame)
    assert never > year > recent
    p_never, p_year, p_recent = churn.predict_proba(frame)
    assert p_never >= p_year > p_recent
    # Nullable columns (as the feature builder writes them) behave the same.
    nullable = frame.astype({"days_since_last_activity": "Float64", "count_activity_90d": "Int64"})
    nullable.loc[0, "days_since_last_activity"] = pd.NA
    np.testing.assert_array_equal(churn.score(nullable), churn.score(frame))
