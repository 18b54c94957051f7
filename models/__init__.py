"""ALS training, tuning, evaluation metrics, top-N scoring and baselines. May import transforms."""
