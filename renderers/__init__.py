"""Renderers: samplers, occupancy grids, volume compositing and mesh extraction."""
