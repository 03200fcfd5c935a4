"""The registered MLflow model, as code: MLflow's models-from-code entry point for funnelcast models.

A registered funnelcast model holds no pickle. Its artifacts are LightGBM's own text model
(``booster.txt``) and one JSON file (``model.json``: the input contract, the calibrator, parameters,
the funnel config), and this file, which MLflow copies beside them and runs when *MLflow* loads the
model (``mlflow.pyfunc.load_model``). funnelcast itself never runs it: it checks every artifact's
SHA-256 against the one recorded with the version and reads the two files
(:func:`funnelcast.training.tracking.load_model`).

Input: a frame as :func:`funnelcast.features.snapshots.build_features` makes it (category attributes
as categoricals or text) with the target's ``<target>_eligible`` column and, optionally, its
``cutoff`` column (the scoring time of a model's seasonal shift; without it no season is applied).
Output: the calibrated probability per row (the value target: expected spend over its horizon), NaN
where the target does not apply.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class FunnelcastPyfunc(PythonModel):
    """A funnelcast target model behind MLflow's pyfunc interface."""

    def load_context(self, context) -> None:
        """Read the model from its artifacts (LightGBM text and JSON)."""
        from funnelcast.training.model import TargetModel

        self.model = TargetModel.load(context.artifacts["booster"], context.artifacts["model"])

    def predict(self, context, model_input, params=None):  # noqa: ARG002 - MLflow's signature
        """Calibrated probabilities of the rows of ``model_input``; NaN where ``<target>_eligible`` is false."""
        from funnelcast.features.model_input import SchemaError
        from funnelcast.features.targets import TARGETS

        eligible = TARGETS[self.model.target].eligible_column
        if eligible not in model_input.columns:
            raise SchemaError(f"the input lacks the column {eligible!r} (whether the {self.model.target} target applies "
                              "to each row); build features with funnelcast.features.snapshots.build_features")
        if TARGETS[self.model.target].is_probability:
            p = self.model.predict_proba(model_input)
        else:  # the value target: expected spend over its horizon (training/value.py)
            p = self.model.predict(model_input)
        return np.where(model_input[eligible].to_numpy(dtype=bool), p, np.nan)


mlflow.models.set_model(FunnelcastPyfunc())
