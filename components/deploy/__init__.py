"""The deploy step family: roll a model out as a KServe InferenceService with a canary split.

`inference_service` computes the desired manifest (pure), `crd_schema` checks it against the
real KServe CRD, `cluster` is the only module that talks to the Kubernetes API, and
`rollout` joins them for the KFP component in `component`.
"""
