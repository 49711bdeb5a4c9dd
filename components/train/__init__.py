"""Training step: checked XGBoost hyperparameters and the memory-lean, Parquet-streaming trainer."""
