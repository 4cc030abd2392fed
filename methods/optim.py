"""Optimisers shared by methods: Adam with linear warm-up and exponential decay."""

from __future__ import annotations

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Adam with linear warm-up and exponential decay (Instant-NGP's optimiser)."""

    lr: float = 1e-2
    """Peak learning rate."""
    warmup_steps: int = 100
    """Linear warm-up from 0 to ``lr`` over these steps."""
    final_lr_factor: float = 0.03
    """The learning rate decays exponentially to ``lr * final_lr_factor`` at the last step."""
    b1: float = 0.9
    b2: float = 0.99
    eps: float = 1e-15
    """Adam's epsilon; tiny, as Instant-NGP uses, so rarely-touched hash entries still move."""


def warmup_decay(config: OptimConfig, steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``lr`` over ``warmup_steps``, then exponential decay to
    ``lr * final_lr_factor`` at step ``steps``."""
    decay_steps = max(1, steps - config.warmup_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, config.lr, max(1, config.warmup_steps)),
            optax.exponential_decay(config.lr, decay_steps, config.final_lr_factor),
        ],
        [config.warmup_steps],
    )


def adam(config: OptimConfig, steps: int) -> optax.GradientTransformation:
    """Adam over ``steps`` steps with the `warmup_decay` schedule."""
    return optax.adam(warmup_decay(config, steps), b1=config.b1, b2=config.b2, eps=config.eps)
