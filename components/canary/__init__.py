"""Canary analysis and its outcome: promote the new model to all traffic, or roll it back.

`policy` is what a canary must hold (data, parsed from the pipeline parameter), `prometheus`
queries the predictor's metrics, `measurement` turns them into each version's figures,
`decision` applies the policy's checks and decides when, `report` renders the decision for the
Kubeflow UI, `promotion` carries it out on the InferenceService (through
`ctloop.components.deploy.cluster`) and in MLflow (through `mlflow_registry`), and `component`
is the KFP wrapper.
"""
