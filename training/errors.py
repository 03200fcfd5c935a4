"""Errors a user can cause, importable without loading MLflow or LightGBM (the CLI catches these)."""

from funnelcast.features.errors import FunnelcastError


class TrackingError(FunnelcastError, RuntimeError):
    """The MLflow tracking store or model registry cannot do what was asked; the message names the store."""

    kind = "tracking store"
