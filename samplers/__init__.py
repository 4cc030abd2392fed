"""Samplers: what marks the samples along a ray worth evaluating (empty-space skipping),
behind one interface (`base.Sampler`): the occupancy grid (`grid.py`, Instant-NGP) and
the learned occupancy network (`network.py`, LeC2O-NeRF). See ``docs/design.md``."""
