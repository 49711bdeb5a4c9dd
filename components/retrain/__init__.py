"""Retraining: whether to retrain, the data a retrained model learns from, and starting the run.

`decision` takes the monitoring run's route (drift, the performance estimate's alert, or enough
new labelled rows; each trigger's finding on record); `retraining_data` builds the table
(reference plus the window, the window alone, or a sliding window of the newest rows);
`kfp_runs` starts a run of the uploaded training pipeline through the KFP API, with a cooldown,
for clusters where the monitoring pipeline should not nest the training one.
"""
