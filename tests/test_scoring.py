"""The Scorer: same scores as the training code path, payload = event source, reasons that explain the score."""

from __future__ import annotations

import datetime as dt
import json
import pickle
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from funnelcast.features.behaviour import feature_spec
from funnelcast.features.errors import EventDataError
from funnelcast.features.events import EventArrays, read_customers, read_events
from funnelcast.features.model_input import SchemaError
from funnelcast.features.snapshots import build_features
from funnelcast.features.timestamps import stated_ns
from funnelcast.serving.attribution import GATHER_ROWS, agreement, top_features
from funnelcast.serving.reasons import Phrasebook
from funnelcast.serving.scoring import CustomerBase, Population, Scorer, ScoringError, score_population


def cutoff_ns(value) -> int:
    return stated_ns(value, None, "cutoff")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer(served_models):
    home, _, _ = served_models
    return Scorer.from_registry(home=home)


@pytest.fixture(scope="module")
def source(served_models, scorer, small_sim):
    _, sim_dir, _ = served_models
    ev, _ = read_events(sim_dir / "events.parquet", scorer.config)
    cust, _ = read_customers(sim_dir / "customers.parquet", scorer.config)
    t = cutoff_ns(small_sim.end - pd.Timedelta(days=20))
    ids = sorted(set(ev["customer_id"].astype(str)) | set(cust["customer_id"].astype(str)))
    return ev, cust, EventArrays.from_frame(ev, scorer.config, customer_ids=ids), t


def test_scores_equal_the_training_code_path(scorer, source):
    """No training/serving skew: the batch scorer's probabilities are the model's on build_features rows."""
    ev, cust, arrays, t = source
    scored = score_population(scorer, arrays, cust, t, reasons=False)
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    assert frame["customer_id"].tolist() == [str(i) for i in scored.customer_ids]
    for target, p in scored.probabilities.items():
        scored_rows = ~np.isnan(p)
        assert scored_rows.sum() > 100
        expected = scorer.models[target].predict_proba(frame)
        np.testing.assert_array_equal(p[scored_rows], expected[scored_rows])
        # The frame says where each target applies: exactly the rows the scorer gives a probability.
        np.testing.assert_array_equal(frame[f"{target}_eligible"].to_numpy(), scored_rows)


def test_the_models_use_every_kind_of_customer_attribute(scorer):
    """The fixture's customers reach the models as a category, a number and a date (no test is vacuous)."""
    for model in scorer.models.values():
        kinds = {a.name: a.kind for a in model.input_.attributes}
        assert kinds == {"country": "category", "segment": "category", "acquisition_channel": "category",
                         "signup_date": "date", "employees": "number"}


def test_a_seasonal_shift_moves_batch_single_customer_training_path_and_mlflow_scores_alike(scorer, source, tmp_path):
    """The year-ago seasonal shift depends on the scoring time: the batch scorer, the one-customer path,
    the model on build_features rows (its ``cutoff`` column) and the registered MLflow model alone must
    all apply the same one."""
    from funnelcast.training.model import DAY_NS, YEAR_NS, SeasonalShift

    ev, cust, arrays, t = source
    model = scorer.models["convert"]
    reference = t - 30 * DAY_NS
    codes = range(len(scorer.config.stages))  # every stage: the year before t ran 0.6 log-odds above calibration's
    shift = SeasonalShift({c: {t - YEAR_NS: (0.6, 0.05), reference - YEAR_NS: (0.0, 0.05)} for c in codes},
                          [reference], DAY_NS)
    saved = model.calibrator_.seasonal_
    # The registered model (two years of simulated history) came back from MLflow with its own table.
    assert saved is not None and sum(len(cells) for cells in saved.residuals.values()) >= 10
    assert model.metadata_["refit"]["seasonal_cells"] == sum(len(cells) for cells in saved.residuals.values())
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    X = model.matrix(frame)
    plain = model.probability(model.raw_score(X), X)  # no scoring time: no season
    try:
        model.calibrator_.seasonal_ = shift
        scored = score_population(scorer, arrays, cust, t, reasons=False).probability("convert")
        rows = ~np.isnan(scored)
        np.testing.assert_array_equal(scored[rows], model.predict_proba(frame)[rows])
        assert np.all(scored[rows] > plain[rows])  # moved, for every scored row
        one = int(np.flatnonzero(rows)[0])
        single = scorer.score_arrays(arrays.subset(np.array([one])), t,
                                     scorer.encode_attributes(cust, arrays.customer_ids[[one]]), reasons=False)
        assert single.probability("convert")[0] == scored[one]
        # MLflow alone, on the same rows: a model logged with this shift applies it from the frame's cutoff.
        import mlflow

        from funnelcast.training import tracking

        previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
        try:  # a store of its own, so the served models' store stays the one the other tests read
            tracking.connect(home=tmp_path / "mlruns")
            version = tracking.log_model(model, frame, "seasonal-check")
            loaded = mlflow.pyfunc.load_model(version.model_uri)
            p = np.asarray(loaded.predict(frame), dtype=float)
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
        np.testing.assert_array_equal(p[rows], scored[rows])
    finally:
        model.calibrator_.seasonal_ = saved


def test_mlflow_model_alone_gives_the_scorers_probabilities(served_models, scorer, source):
    """A data scientist with MLflow alone: load the registered model, predict on build_features output."""
    import mlflow

    ev, cust, arrays, t = source
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    scored = score_population(scorer, arrays, cust, t, reasons=False)
    assert set(scorer.versions) == {"convert", "churn", "value"}
    # The frame's rows in the scorer's customer order.
    frame = frame.set_index("customer_id").loc[list(arrays.customer_ids)].reset_index()
    for target, version in scorer.versions.items():
        loaded = mlflow.pyfunc.load_model(f"models:/{scorer.names[target]}/{version}")
        p = np.asarray(loaded.predict(frame), dtype=float)
        if target == "value":  # expected spend where the value model applies (buyers); trailing spend elsewhere
            expected = np.where(scored.predicted_value, scored.value, np.nan)
            model = scorer.value_model
        else:
            expected = scored.probability(target)
            model = scorer.models[target]
        np.testing.assert_array_equal(np.isnan(p), np.isnan(expected))
        np.testing.assert_allclose(p[~np.isnan(p)], expected[~np.isnan(p)], rtol=1e-12)
        # Categories as text (what a CSV gives back) score the same.
        as_text = frame.astype({c: "string" for c in model.categories_})
        np.testing.assert_array_equal(np.asarray(loaded.predict(as_text), dtype=float), p)
        with pytest.raises(Exception, match=f"{target}_eligible"):
            loaded.predict(frame.drop(columns=f"{target}_eligible"))
        with pytest.raises(Exception, match="count_events_7d"):
            loaded.predict(frame.drop(columns="count_events_7d"))


def test_probabilities_only_where_the_model_was_trained_to_give_them(scorer, source):
    _, cust, arrays, t = source
    table = scorer.frame(score_population(scorer, arrays, cust, t))
    customers = table["status"].eq("customer")
    assert table.loc[customers, "churn_probability"].notna().all()
    assert table.loc[~customers, "churn_probability"].isna().all()
    assert table.loc[table["stage"].eq("loyalty"), "next_stage_probability"].isna().all()  # no stage after the last
    assert table.loc[table["status"].eq("prospect"), "next_stage_probability"].notna().all()
    assert set(table["status"]) <= {"prospect", "customer", "churned", "lapsed", "no_history"}
    tiers = table.loc[customers, ["churn_probability", "risk_tier"]]
    assert (tiers.loc[tiers["risk_tier"].eq("high"), "churn_probability"] >= 0.5).all()
    assert (tiers.loc[tiers["risk_tier"].eq("low"), "churn_probability"] < 0.2).all()
    pct = table.loc[customers, "percentile"]
    assert pct.between(0, 100).all() and pct.max() == 100


def test_percentiles_place_a_score_in_the_population():
    pop = Population.of(np.array([0.1, 0.2, np.nan, 0.3, 0.4]), 0)
    np.testing.assert_allclose(pop.percentile(np.array([0.05, 0.2, 0.4, np.nan])), [0, 50, 100, np.nan])


def test_scoring_a_subset_is_scoring_those_customers(scorer, source):
    """Request by ids = the population's rows: customer segments gathered by `subset` lose nothing."""
    _, cust, arrays, t = source
    whole = score_population(scorer, arrays, cust, t)
    codes = np.array([17, 3, 250, 1999, 42])
    part = arrays.subset(codes)
    attrs = scorer.encode_attributes(cust, part.customer_ids)
    some = scorer.score_arrays(part, t, attrs)
    assert list(some.customer_ids) == list(arrays.customer_ids[codes])
    for target in scorer.models:
        np.testing.assert_array_equal(some.probability(target), whole.probability(target)[codes])
    assert some.reasons == [whole.reasons[c] for c in codes]


def test_a_payload_scores_like_the_event_source(scorer, source):
    """The same customer posted as JSON-like events and attributes gets the same score and reasons."""
    ev, cust, arrays, t = source
    base = score_population(scorer, arrays, cust, t)
    counts = ev.groupby("customer_id", observed=True).size()
    checked = 0
    for cid in counts[counts >= 15].index[:25]:
        rows = ev[ev["customer_id"] == cid]
        events = [
            {"timestamp": r.timestamp.isoformat(), "event_type": r.event_type,
             "channel": None if pd.isna(r.channel) else r.channel, "amount": None if pd.isna(r.amount) else r.amount}
            for r in rows.sample(frac=1, random_state=0).itertuples()  # order must not matter
        ]
        attrs_row = cust[cust["customer_id"] == cid].iloc[0]
        attributes = {c: (v.isoformat() if isinstance(v, pd.Timestamp) else str(v)) for c, v in attrs_row.items()
                      if c != "customer_id" and not pd.isna(v)}
        arr, summary = scorer.encoder.records(events, str(cid))
        encoded, ignored = scorer.encode_customer(attributes)
        assert ignored == [] and summary.rows_out == len(events)
        one = scorer.score_arrays(arr, t, encoded)
        i = int(np.flatnonzero(arrays.customer_ids == cid)[0])
        for target in scorer.models:
            # The same features bit for bit (timestamps keep their nanoseconds), so the same probability.
            np.testing.assert_array_equal(one.probability(target), base.probability(target)[i:i + 1])
        assert [r["feature"] for r in one.reasons[0]] == [r["feature"] for r in base.reasons[i]]
        for mine, theirs in zip(one.reasons[0], base.reasons[i]):
            assert mine["contribution"] == pytest.approx(theirs["contribution"], abs=1.5e-6)  # rounded to 6 places
        checked += 1
    assert checked == 25


def test_payload_problems_name_the_event_and_field(scorer):
    encode = scorer.encoder.records
    with pytest.raises(EventDataError, match=r"events\[1\]\.event_type 'teleport' is not in the funnel config"):
        encode([{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order"},
                {"timestamp": "2025-01-02T00:00:00Z", "event_type": "teleport"}])
    with pytest.raises(EventDataError, match=r"events\[0\]\.timestamp 2025-01-01T00:00:00 is a timestamp without a time zone"):
        encode([{"timestamp": "2025-01-01T00:00:00", "event_type": "order"}])
    with pytest.raises(EventDataError, match=r"events\[0\]\.timestamp 'soon' is not an ISO 8601"):
        encode([{"timestamp": "soon", "event_type": "order"}])
    with pytest.raises(EventDataError, match=r"events\[1\]\.event_type is missing"):
        encode([{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order"}, {"timestamp": "2025-01-01T00:00:00Z"}])
    # The amount rules of the event contract, for a caller of the Scorer as for the HTTP schema.
    for amount, problem in ((-5.0, "is a negative purchase amount"), ("lots", "is not a number"),
                            (float("inf"), "is infinite")):
        with pytest.raises(EventDataError, match=rf"events\[0\]\.amount .* {problem}"):
            encode([{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order", "amount": amount}])
        with pytest.raises(EventDataError, match="amount"):
            scorer.score_payload([{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order", "amount": amount}],
                                 None, "c", "2025-06-01T00:00:00Z", Population.of(np.array([0.5]), 0))
    arr, summary = encode([{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order", "amount": 5.0}] * 3
                          + [{"timestamp": "2025-07-01T00:00:00Z", "event_type": "order"}])
    assert summary.dropped == {"exact duplicate events": 2} and summary.rows_out == 2 and len(arr.ts) == 2
    with pytest.raises(SchemaError, match="customer.employees must be a number, got 'lots'"):
        scorer.encode_customer({"employees": "lots"})


def test_payload_counts_what_was_dropped_altered_and_ignored_once(scorer):
    """/score_events' ``input``: one summary for the request (not one per model), with every count."""
    events = [{"timestamp": "2025-01-01T00:00:00Z", "event_type": "order", "amount": 5.0}] * 2 + [
        {"timestamp": "2025-02-01T00:00:00Z", "event_type": "blog_view", "channel": "carrier_pigeon"},
        {"timestamp": "2025-07-01T00:00:00Z", "event_type": "order"}]
    result = scorer.score_payload(events, {"segment": "smb", "shoe_size": 44, "employees": 12}, "c",
                                  "2025-06-01T00:00:00Z", Population.of(np.array([0.5]), 0))
    assert result["input"] == {"events": 4, "duplicates_dropped": 1, "event_types_mapped_to_other": 0,
                               "channels_mapped_to_other": 1, "events_at_or_after_as_of": 1,
                               "ignored_attributes": ["shoe_size"]}


def test_path_attribution_sums_to_the_raw_score_and_agrees_with_treeshap(scorer, source):
    ev, cust, arrays, t = source
    model = scorer.models["churn"]
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    X = model.matrix(frame)[:1500]
    attribution = scorer.attributions["churn"]
    credit = attribution.contributions(model.booster_, X)
    np.testing.assert_allclose(credit.sum(axis=1) + attribution.bias, model.booster_raw(X), atol=1e-9)
    # The gather path (a request's few rows) and the sparse product (a batch) are the same numbers.
    assert len(X) > GATHER_ROWS
    for a, b in ((0, 1), (0, 20), (GATHER_ROWS - 1, GATHER_ROWS + 1)):
        np.testing.assert_allclose(attribution.contributions(model.booster_, X[a:b]), credit[a:b], atol=1e-12)
    report = agreement(attribution, model.booster_, X, min_credit=scorer.config.serving.min_reason_credit)
    assert report["max_sum_error"] < 1e-9
    assert report["top1_in_shap_topk"] > 0.85 and report["topk_overlap"] > 0.6
    # Where a reason is stated (a material push), it is TreeSHAP's top reason or among its top 3.
    assert report["material_rows"] > 100
    assert report["material_top1_match"] > 0.8 and report["material_top1_in_shap_topk"] > 0.9


def test_single_row_fast_path_is_booster_predict_bit_for_bit(scorer, source):
    ev, cust, arrays, t = source
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    for target, model in scorer.models.items():
        X = model.matrix(frame)[:300]
        assert np.isnan(X).any()  # missing values take the trees' default directions: covered too
        fast = scorer.row_predictors[target]
        assert np.array_equal([fast.raw_score(x) for x in X], model.booster_raw(X, num_threads=1))
        leaves = model.booster_.predict(X, pred_leaf=True, num_iteration=model.best_iteration_)
        assert np.array_equal(np.array([fast.leaves(x) for x in X]), leaves)
        with pytest.raises(ValueError, match=f"a row of {X.shape[1]} features"):
            fast.raw_score(X[0, :-1])
        copy = pickle.loads(pickle.dumps(fast))  # e.g. a Scorer shipped to a Dask worker
        assert copy.raw_score(X[5]) == fast.raw_score(X[5]) and np.array_equal(copy.leaves(X[5]), fast.leaves(X[5]))
        assert fast.fast  # the pinned LightGBM has the C names: the fast path is what ran above


def test_single_row_path_falls_back_to_booster_predict_without_lightgbms_private_names(scorer, source, monkeypatch):
    import lightgbm.basic

    from funnelcast.serving import rowpredict
    from funnelcast.serving.rowpredict import RowPredictor

    ev, cust, arrays, t = source
    frame = build_features(ev, cust, pd.Timestamp(t, tz="UTC"), scorer.config)
    assert rowpredict._c_api() is not None
    with monkeypatch.context() as patch:  # LightGBM itself needs the name back before it predicts again
        patch.delattr(lightgbm.basic, "_safe_call")
        assert rowpredict._c_api() is None
    with monkeypatch.context() as patch:
        patch.setattr(lightgbm.basic, "_LIB", type("OlderLib", (), {})())
        assert rowpredict._c_api() is None
    monkeypatch.setattr(rowpredict, "_c_api", lambda: None)
    for target, model in scorer.models.items():
        X = model.matrix(frame)[:50]
        slow = RowPredictor(model.booster_, model.best_iteration_)
        assert not slow.fast
        assert np.array_equal([slow.raw_score(x) for x in X], model.booster_raw(X, num_threads=1))
        leaves = model.booster_.predict(X, pred_leaf=True, num_iteration=model.best_iteration_)
        assert np.array_equal(np.array([slow.leaves(x) for x in X]), leaves)


def test_top_features_are_positive_credits_largest_first():
    credit = np.array([[0.1, -2.0, 0.5, 0.0, 0.3], [-1.0, -0.5, -0.1, -3.0, -0.2]])
    idx, amount = top_features(credit, 3)
    assert idx.tolist() == [[2, 4, 0], [-1, -1, -1]]
    np.testing.assert_allclose(amount[0], [0.5, 0.3, 0.1])
    # One row (a request) takes a shortcut: same answer as the batch path.
    rng = np.random.default_rng(3)
    many = rng.normal(size=(50, 12)) - 0.8  # some rows with fewer than 4 positive credits
    for i in range(len(many)):
        one = top_features(many[i : i + 1], 4)
        both = top_features(many[[i, i]], 4)
        assert one[0].tolist()[0] == both[0].tolist()[0] and one[1].tolist()[0] == both[1].tolist()[0]


def test_reasons_name_facts_in_words(config):
    book = Phrasebook(feature_spec(config))
    assert book.phrase("days_since_last_activity", 45.2) == "no activity for 45 days"
    assert book.phrase("days_since_last_activity", 2.0) == "last activity 2 days ago"
    assert book.phrase("count_support_ticket_30d", 3.0) == "3 support tickets in the last 30 days"
    assert book.phrase("count_support_ticket_30d", 1.0) == "1 support ticket in the last 30 days"
    assert book.phrase("count_email_opened_7d", 0.0) == "no email opened events in the last 7 days"
    assert book.phrase("days_since_last_purchase", float("nan")) == "never purchased"
    assert book.phrase("current_stage", 3.0) == "at the purchase stage"
    assert book.phrase("segment", "smb") == "segment: smb"
    assert book.phrase("days_since_signup_date", 12.0) == "signup date 12 days ago"
    assert book.concept("days_since_last_event") == book.concept("count_activity_30d") == "activity"
    assert book.concept("count_support_ticket_7d") == book.concept("count_support_ticket_all_time")


def test_reasons_for_one_customer_state_different_facts(scorer, source):
    _, cust, arrays, t = source
    scored = score_population(scorer, arrays, cust, t)
    explained = [r for r in scored.reasons if r]
    assert len(explained) > 100
    for reasons in explained:
        facts = [scorer.phrases.concept(r["feature"]) for r in reasons]
        assert len(facts) == len(set(facts)) <= 3
        credits = [r["contribution"] for r in reasons]
        assert credits == sorted(credits, reverse=True) and min(credits) >= scorer.config.serving.min_reason_credit
    # Immaterial pushes are no reasons: some customers get fewer than the reasons asked for (every score has
    # hundreds of small pushes, so without the floor every explained customer would get all of them).
    assert any(len(r) < scorer.config.serving.reasons for r in explained)


def test_direction_a_support_ticket_burst_and_silence_raise_churn(scorer):
    """Behavioural check on the simulator-trained model: going quiet after a run of support tickets is riskier
    than staying active."""
    as_of = dt.datetime(2025, 12, 1, tzinfo=dt.timezone.utc)
    t = scorer.as_of_ns(as_of.isoformat())

    def day(n):
        return (as_of - dt.timedelta(days=n)).isoformat()

    history = [{"timestamp": day(300), "event_type": "order", "amount": 80.0},
               {"timestamp": day(200), "event_type": "repeat_order", "amount": 60.0}]
    active = history + [{"timestamp": day(d), "event_type": "blog_view"} for d in range(1, 60, 3)]
    quiet = history + [{"timestamp": day(d), "event_type": "support_ticket"} for d in (50, 48, 46)]
    scores = {}
    for name, events in (("active", active), ("quiet", quiet)):
        arr, _ = scorer.encoder.records(events, "x")
        scores[name] = scorer.score_arrays(arr, t, scorer.encode_customer({})[0])
    assert scores["quiet"].p_risk[0] > scores["active"].p_risk[0]
    assert scores["quiet"].reasons[0], "a high churn score comes with reasons"


def test_outreach_ranks_customers_by_value_at_risk(scorer, source):
    _, cust, arrays, t = source
    base = CustomerBase(scorer, arrays, cust, t)
    ranked, explained = base.outreach(20)
    assert ranked["rank"].tolist() == list(range(1, 21))
    assert ranked["value_at_risk"].is_monotonic_decreasing
    assert (ranked["status"] == "customer").all() and ranked["reason_1"].notna().all()
    eligible = base.table[base.table["status"].eq("customer")]
    assert ranked["value_at_risk"].iloc[0] == eligible["value_at_risk"].max()
    assert list(explained.customer_ids) == ranked["customer_id"].tolist()
    segment = str(cust["segment"].iloc[0])
    only, _ = base.outreach(10, segment=segment)
    assert len(only) and (only["segment"] == segment).all()
    with pytest.raises(ScoringError, match="stage 'nope' is not a stage"):
        base.outreach(5, stage="nope")


def test_value_is_the_value_models_expected_spend_for_buyers_and_trailing_spend_without_one(scorer, source):
    _, cust, arrays, t = source
    scored = score_population(scorer, arrays, cust, t, reasons=False)
    table = scorer.frame(scored)
    buyers = table["status"].isin(["customer", "churned"]).to_numpy()
    assert buyers.any() and (~buyers).any()
    np.testing.assert_array_equal(scored.predicted_value, buyers)
    assert (table.loc[buyers, "value_basis"] == "expected_next_365d").all()
    assert (table.loc[~buyers, "value_basis"] == "spent_last_365d").all()
    # The buyers' value is the registered value model's prediction on the training feature code's rows.
    frame = build_features(*source[:2], pd.Timestamp(t, tz="UTC"), scorer.config).set_index("customer_id")
    ids = table.loc[buyers, "customer_id"].to_numpy(dtype=object)
    np.testing.assert_allclose(table.loc[buyers, "customer_value"], scorer.value_model.predict(frame.loc[ids].reset_index()),
                               rtol=1e-12)
    np.testing.assert_allclose(table["value_at_risk"], table["churn_probability"] * table["customer_value"])
    assert table["value_model_version"].eq(scorer.versions["value"]).all()

    # One customer through the request path: the same value as in the batch (the single-row fast path).
    one = table.loc[table["status"].eq("customer")].iloc[0]
    single, _ = CustomerBase(scorer, arrays, cust, t).score_ids([one["customer_id"]])
    assert single.value[0] == pytest.approx(one["customer_value"], rel=1e-12)

    # Without a value model: trailing spend, labelled as such.
    bare = Scorer(scorer.models, {k: v for k, v in scorer.versions.items() if k != "value"}, scorer.config)
    ts = scorer.as_of_ns("2025-12-01T00:00:00Z")
    events = [{"timestamp": "2025-11-01T00:00:00Z", "event_type": "order", "amount": 100.0},
              {"timestamp": "2024-11-01T00:00:00Z", "event_type": "order", "amount": 1000.0},  # older than 365 days
              {"timestamp": "2025-12-02T00:00:00Z", "event_type": "repeat_order", "amount": 7.0}]  # after as_of
    arr, _ = bare.encoder.records(events, "x")
    plain = bare.score_arrays(arr, ts, bare.encode_customer({})[0])
    assert plain.value[0] == 100.0 and bare.value_basis(plain)[0] == "spent_last_365d"
    with_model = scorer.score_arrays(arr, ts, scorer.encode_customer({})[0])
    assert with_model.value[0] != 100.0 and scorer.value_basis(with_model)[0] == "expected_next_365d"


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "funnelcast", *args], capture_output=True, text=True, timeout=600,
                          env=env)


def test_batch_score_and_outreach_commands_write_tables(served_models, small_sim, tmp_path):
    home, sim_dir, _ = served_models
    as_of = str(small_sim.end)
    out = tmp_path / "scores.csv"
    run = _cli("score", "--events", str(sim_dir / "events.parquet"), "--customers", str(sim_dir / "customers.parquet"),
               "--as-of", as_of, "--out", str(out), "--mlflow-dir", str(home))
    assert run.returncode == 0, run.stderr
    table = pd.read_csv(out)
    assert len(table) == small_sim.customers.shape[0]
    assert {"customer_id", "stage", "status", "next_stage_probability", "churn_probability", "percentile", "risk_tier",
            "customer_value", "value_basis", "value_at_risk", "reason_1", "churn_model_version",
            "value_model_version"} <= set(table.columns)
    assert set(table["value_basis"]) == {"expected_next_365d", "spent_last_365d"}
    db = f"sqlite:///{tmp_path / 'crm.db'}#outreach"
    run = _cli("outreach", "--top", "25", "--events", str(sim_dir / "events.parquet"), "--customers",
               str(sim_dir / "customers.parquet"), "--as-of", as_of, "--out", db, "--mlflow-dir", str(home))
    assert run.returncode == 0, run.stderr
    assert "outreach: top 10 of 25" in run.stdout
    import sqlalchemy as sa

    listed = pd.read_sql("SELECT * FROM outreach", sa.create_engine(db.split("#")[0]))
    assert listed["rank"].tolist() == list(range(1, 26))
    best = table[table["status"] == "customer"].sort_values("value_at_risk", ascending=False).head(25)
    assert listed["customer_id"].tolist() == best["customer_id"].tolist()


def test_score_without_champions_names_the_store_and_model(tmp_path, small_sim, served_models):
    from funnelcast.training import tracking

    _, sim_dir, _ = served_models
    tracking.connect(home=tmp_path / "empty")  # a store that exists, with no model in it
    run = _cli("score", "--events", str(sim_dir / "events.parquet"), "--out", str(tmp_path / "x.parquet"),
               "--mlflow-dir", str(tmp_path / "empty"))
    assert run.returncode == 2
    assert "funnelcast-convert" in run.stderr and str(tmp_path / "empty") in run.stderr
    json.dumps(run.stderr)  # one readable paragraph, no traceback
    assert "Traceback" not in run.stderr


def test_a_model_is_only_served_with_its_own_column_order(scorer):
    """A config whose event groups come in another order builds the same columns in another order: refused."""
    from funnelcast.features.funnel import FunnelConfig
    from funnelcast.serving.scoring import ModelMismatchError

    raw = scorer.config.model_dump(mode="json")
    raw["event_groups"] = dict(reversed(list(raw["event_groups"].items())))
    with pytest.raises(ModelMismatchError):
        Scorer(scorer.models, scorer.versions, FunnelConfig.model_validate(raw))


def test_reading_commands_create_no_store_and_no_database(tmp_path, served_models):
    """A mistyped store or SQL source is refused, naming it, and nothing is created on the way."""
    _, sim_dir, _ = served_models
    for option, where in (("--tracking-uri", f"sqlite:///{tmp_path}/no/such/dir/mlflow.db"),
                          ("--mlflow-dir", str(tmp_path / "missing-home"))):
        run = _cli("score", "--events", str(sim_dir / "events.parquet"), "--out", str(tmp_path / "x.parquet"), option, where)
        assert run.returncode == 2 and "there is no MLflow store at" in run.stderr and "Traceback" not in run.stderr
    run = _cli("check", "--events", f"sqlite:///{tmp_path}/missing.db#events")
    assert run.returncode == 2 and "no such database file" in run.stderr, run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_a_damaged_tracking_database_is_one_paragraph(tmp_path, served_models, damage):
    import shutil

    home, sim_dir, _ = served_models
    copy = tmp_path / "mlruns"
    shutil.copytree(home, copy)
    db = copy / "mlflow.db"
    data = db.read_bytes()
    db.write_bytes(bytes(range(256)) * 80 if damage == "corrupt" else data[: len(data) // 3])
    run = _cli("score", "--events", str(sim_dir / "events.parquet"), "--out", str(tmp_path / "x.parquet"),
               "--mlflow-dir", str(copy))
    assert run.returncode == 2 and "bad tracking store" in run.stderr and str(db) in run.stderr, run.stderr
    assert "Traceback" not in run.stderr


def test_a_failed_webhook_delivery_is_resumed_at_its_own_as_of_without_resending(served_models, tmp_path):
    """funnelcast score to a webhook, no --as-of: the first run fails half-way (a delivery failure, not bad
    input); the re-run scores as of the same instant by itself and sends only what is missing."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    home, sim_dir, _ = served_models
    seen: list[tuple[int, str]] = []
    state = {"fail_from": 3}

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = 503 if state["fail_from"] and body["batch"] >= state["fail_from"] else 200
            seen.append((body["batch"], self.headers["Idempotency-Key"]))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        args = ("score", "--events", str(sim_dir / "events.parquet"), "--customers", str(sim_dir / "customers.parquet"),
                "--out", url, "--state-dir", str(tmp_path / "state"), "--mlflow-dir", str(home))
        first = _cli(*args)
        assert first.returncode == 2 and "delivery failed" in first.stderr and "bad input" not in first.stderr
        delivered = {key for batch, key in seen if batch < 3}
        state["fail_from"] = 0
        seen.clear()
        second = _cli(*args)
        assert second.returncode == 0, second.stderr
        assert "resuming the unfinished delivery of scores scored as of" in second.stdout
        assert "2 already delivered by an earlier run" in second.stdout
        assert not delivered & {key for _, key in seen}  # nothing delivered was sent again
    finally:
        server.shutdown()
