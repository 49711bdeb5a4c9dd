"""A/B experiments: variants judged on the outcomes of the requests each one answered.

`policy` is the experiment's metric and confidence (data, parsed from the pipeline parameter),
`observations` joins the prediction log (`ctloop.components.contract.prediction_log`) with the
outcome labels, `sequential` is the always-valid test that lets the experiment be checked every
day, `decision` compares each challenger with the control and decides (`run_ab_analysis`),
`report` renders the decision for the Kubeflow UI, and `component` is the KFP wrapper.
"""
