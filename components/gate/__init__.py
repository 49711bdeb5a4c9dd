"""Quality gate: a policy as data, and the decision that blesses (or blocks) a candidate."""
