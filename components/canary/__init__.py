"""Canary analysis and its outcome: promote the new model to all traffic, or roll it back.

`prometheus` queries the predictor's metrics, `analysis` turns a policy (data) and those
metrics into a decision, `promotion` carries the decision out on the InferenceService (through
`ctloop.components.deploy.cluster`) and in MLflow (through `mlflow_registry`), and `component`
is the KFP wrapper.
"""
