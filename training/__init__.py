"""training: LightGBM conversion and churn models (see the training issue)."""
