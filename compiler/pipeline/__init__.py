"""One spec through every stage: compile (spec to LaunchPlan) and build (LaunchPlan to
the chosen targets' artifacts, in memory)."""
