"""Analysis: statistics, per-step recording, aggregation over repeats, comparison of runs, the results reader."""
