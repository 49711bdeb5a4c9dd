"""The model contract: what every step that trains, scores or serves a model agrees on.

- `profile`: the reference profile (`ctloop.reference_profile/v1`), typed, loaded and checked
  in one place.
- `model_input`: the feature schema and the one way rows become model input (`to_frame`) and
  scores (`predict_scores`).
- `model_folder`: the model folder's file names, writing one, and loading one back.
- `model_uri`: turning a model URI (path, file://, MLflow `models:/` or `runs:/`) into a folder.
- `prediction_log`: the prediction log's schema and row hash, shared by the server that writes
  it and the A/B analysis that reads it.
- `feast_repo`: where a Feast repository's `feature_store.yaml` is read from (a folder or a URI),
  by the steps that read features and the predictor that looks them up.

Training, evaluation, batch scoring, drift and serving import this package; serving imports
nothing else of `components/`, so the serving image copies only these modules. Nothing here
imports kfp, and mlflow only when an MLflow URI is resolved.
"""
