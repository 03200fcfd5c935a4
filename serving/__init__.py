"""serving: the BentoML scoring service and batch scoring (see the serving issue)."""
