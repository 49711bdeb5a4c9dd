"""Quality gate: a policy as data (`policy`), and the decision that blesses or blocks a
candidate (`decision`)."""
