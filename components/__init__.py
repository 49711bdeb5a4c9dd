"""Step families of the ctloop pipelines: plain library modules plus thin KFP wrappers.

Each family (`data`, `features`, `train`, `trainjob`, `evaluate`, `gate`, `registry`, `deploy`,
`canary`, `shadow`, `experiment`, `drift`, `batch_scoring`, `retrain`, `notify`) keeps its KFP
wrappers in `component.py`
and its logic in library modules beside it. A step with logic of its own has one entry function
named for the step, `run_<step>` (`run_training`, `run_evaluation`, `run_gate`,
`run_registration`, `run_deployment`, `run_scoring`, `run_drift`, `run_canary_analysis`,
`run_shadow_analysis`, `run_ab_analysis`), which its wrapper calls; steps that only compose
shared pieces (load, split, the retraining helpers) call those directly.

Shared by every family: `contract` (the model contract: reference profile, model input, model
folder, the prediction log's schema), `table_io` (reading and writing tables), `checks` (the
check record of every decision), `decisions` (every decision on record in MLflow, a model's
history), `lineage` (the code, image and compile options a step runs with), `json_parameter`
(JSON parameters and policies), `kube_labels` (Kubernetes label and name rules), `image` (the
component image).

Nothing imported here may use kfp's authoring API: a running component imports these
modules with `_KFP_RUNTIME=true`, where `kfp.dsl.component` does not exist.
"""
