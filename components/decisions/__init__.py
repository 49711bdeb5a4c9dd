"""Decision records: every decision of the loop, its inputs pinned, on record and replayable."""
