"""The data step family: load a table, validate it for training, profile it, split it.

The library modules here (`dataset_metadata`, `validation`, `profile`, `split`) never import kfp, so
a running component can import them; the KFP wrappers live in `component.py`.
"""
