"""Retraining after drift: the data a retrained model learns from, and starting the run.

`retraining_data` builds the table (reference plus the drifted window, the window alone, or a
sliding window of the newest rows); `kfp_runs` starts a run of the uploaded training pipeline
through the KFP API, with a cooldown, for clusters where the monitoring pipeline should not
nest the training one.
"""
