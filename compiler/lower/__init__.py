"""Stage 4: the cross-field rules of a guest and its lowering into a LaunchPlan, the
target-neutral description of one launch (QEMU argv pieces, confinement, limits)."""
