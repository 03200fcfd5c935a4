"""Optional hyper-parameter search with Optuna on one fold's validation cutoffs (never its test cutoff)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from sklearn.metrics import log_loss

from funnelcast.features.model_input import ModelInput
from funnelcast.features.targets import TARGETS
from funnelcast.training.model import fit_target_model


def search_space(trial) -> dict[str, Any]:
    """The Optuna search space over LightGBM's main parameters (scikit-learn names)."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.1, log=True),
        "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
        "min_child_samples": trial.suggest_int("min_child_samples", 20, 500, log=True),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.3, 1.0),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def tune(
    target: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    model_input: ModelInput,
    base_params: dict[str, Any],
    n_trials: int,
    *,
    seed: int = 0,
    early_stopping_rounds: int = 50,
    threads: int = 0,
    on_trial: Callable[[int, dict[str, Any], float], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """Minimise validation log loss of the uncalibrated booster over ``n_trials`` seeded TPE trials.

    ``on_trial(number, params, value)`` is called after each trial (the MLflow nested run).
    Returns the best parameters merged over ``base_params``, and the best validation log loss.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y_valid = valid[TARGETS[target].label].to_numpy(dtype=float)

    def objective(trial) -> float:
        params = {**base_params, **search_space(trial)}
        model = fit_target_model(target, train, valid, model_input, params, seed=seed,
                                 early_stopping_rounds=early_stopping_rounds, threads=threads)
        raw = model.raw_score(model.matrix(valid))
        value = float(log_loss(y_valid, 1 / (1 + np.exp(-raw)), labels=[0, 1]))
        trial.set_user_attr("best_iteration", model.best_iteration_)
        if on_trial is not None:
            on_trial(trial.number, params, value)
        return value

    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_trials)
    return {**base_params, **study.best_params}, float(study.best_value)
