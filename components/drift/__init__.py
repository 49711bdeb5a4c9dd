"""Drift monitoring: a production window compared against the champion's reference profile.

`window_profile` reduces the window to counts per reference bin and category in one streaming
pass, `statistics` holds the measures (PSI, Jensen-Shannon distance, binned KS, chi-square with
Cramér's V, unseen-category share, missing-rate change) and their no-drift noise bounds,
`policy` holds the thresholds written as data, `detection` turns the measures into decisions
with them, and `report` renders the result as JSON and as a self-contained HTML page for the
Kubeflow UI.
"""
