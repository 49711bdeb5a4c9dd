"""Batch scoring: a Parquet or CSV table scored with a model folder or a registered model."""
