"""Shared fixtures. PostgreSQL tests skip where no server is reachable, unless
FUNNELCAST_REQUIRE_SERVICES is set (CI sets it in .ci/run), which turns that skip into a failure."""

from __future__ import annotations

import os
import uuid

import pytest

from funnelcast.features.funnel import FunnelConfig, load_config

# Test processes share the cores (pytest -n auto): one LightGBM thread each, or OpenMP spinning
# makes boosting tens of times slower.
os.environ.setdefault("FUNNELCAST_THREADS", "1")

POSTGRES_URL = os.environ.get("FUNNELCAST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def config() -> FunnelConfig:
    return load_config()


@pytest.fixture(scope="session")
def utc_config() -> FunnelConfig:
    """The default funnel with naive timestamps read as UTC."""
    raw = load_config().model_dump(mode="json")
    raw["source_timezone"] = "UTC"
    return FunnelConfig.model_validate(raw)


@pytest.fixture()
def postgres_url() -> str:
    """A reachable PostgreSQL URL, or a skip (a failure when services are required)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any connection problem means "not reachable"
        if os.environ.get("FUNNELCAST_REQUIRE_SERVICES"):
            pytest.fail(f"PostgreSQL at {POSTGRES_URL} is required (FUNNELCAST_REQUIRE_SERVICES) but unreachable: {exc}")
        pytest.skip(f"no PostgreSQL reachable at {POSTGRES_URL}: {exc}")
    return POSTGRES_URL


@pytest.fixture()
def postgres_table(postgres_url: str):
    """A unique table name in the test database, dropped afterwards."""
    import sqlalchemy as sa

    name = f"fc_test_{uuid.uuid4().hex[:10]}"
    yield name
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def small_sim(config):
    """A 4,000-customer simulation with truth: big enough for every target to train, small enough to be quick.

    Its customers table gets a numeric attribute, ``employees`` (seeded noise, missing for a tenth of the
    customers), beside the simulator's categorical and date ones: every kind of attribute reaches the models
    the tests train and serve."""
    import numpy as np

    from funnelcast.features.simulate import simulate

    sim = simulate(4000, config, seed=11)
    rng = np.random.default_rng(11)
    employees = np.round(rng.lognormal(3.0, 1.2, len(sim.customers)))
    employees[rng.random(len(employees)) < 0.1] = np.nan
    sim.customers["employees"] = employees
    return sim


@pytest.fixture(scope="session")
def small_table(small_sim, config):
    """The training set (:class:`~funnelcast.features.snapshots.TrainingSet`) of :func:`small_sim`, built
    through the public API as a user's would be."""
    from funnelcast import Project

    project = Project(config, threads=1)
    return project.training_set(project.load(small_sim.events, small_sim.customers), data_end=small_sim.end)


@pytest.fixture(scope="session")
def served_models(small_sim, small_table, tmp_path_factory):
    """Champion models for :func:`small_sim` in an embedded MLflow store of their own (one fold, quick
    boosting: enough to serve and to explain, not to judge quality). Returns (home dir, sim dir,
    training result); the simulation is written to ``sim_dir`` as events.parquet/customers.parquet."""
    from funnelcast import FunnelConfig, Project

    home = tmp_path_factory.mktemp("served-mlruns")
    raw = load_config().model_dump(mode="json")
    raw["training"] |= {"folds": 1, "validation_cutoffs": 1, "lightgbm": {"learning_rate": 0.1, "num_leaves": 15}}
    project = Project(FunnelConfig.model_validate(raw), mlflow_dir=home, threads=1)
    result = project.train(small_table, report_dir=home / "report")
    sim_dir = tmp_path_factory.mktemp("served-sim")
    small_sim.write(sim_dir)
    return home, sim_dir, result
