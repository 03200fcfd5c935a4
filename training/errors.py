"""Errors a user can cause, importable without loading MLflow or LightGBM (the CLI catches these)."""


class TrackingError(RuntimeError):
    """The MLflow tracking store or model registry cannot do what was asked; the message names the store."""
