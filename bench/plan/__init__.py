"""Planning: what to run. The variant registry, the scenario table, steps and jobs."""
