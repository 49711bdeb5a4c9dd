"""The features family: one Feast feature definition for training and serving.

`repo` defines the demo's feature repository (entity, feature views over Parquet, the feature
service) and opens a local Feast store; `training_table` builds a training table with Feast's
point-in-time join; `materialize` keeps the online store fresh; `demo_source` turns the demo's
table into the timestamped Parquet the feature views read. Feast is imported only inside
functions: it is an optional integration (`pip install 'ctloop[feast]'`).
"""
