"""ctloop: continuous training of tabular XGBoost models on Kubeflow Pipelines and KServe."""

__version__ = "0.1.0"
