"""Shadow analysis: does a model that scored the served model's requests unseen agree with it?

`policy` is what a shadow must hold (data, parsed from the pipeline parameter), `measurement`
reads the paired figures the predictor counts (from Prometheus, from one predictor's /metrics,
or offline from two arrays of scores), `decision` applies the policy's checks and decides when
(`run_shadow_analysis` is the step's entry), `report` renders the decision for the Kubeflow UI,
and `component` is the KFP wrapper.
"""
