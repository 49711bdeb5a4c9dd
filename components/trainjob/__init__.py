"""Training on several nodes through Kubeflow Trainer: the TrainJob, the cluster, the step.

`trainjob` builds the TrainJob manifest (pure), `cluster` is the only module that talks to the
Kubernetes API for it (create, follow, the workers' logs), `distributed_training` is the step's
entry (`run_distributed_training`: the job, then MLflow as the one-process train step logs it),
and `component` the KFP wrapper. The workers themselves are `ctloop.components.train.distributed`.
"""
