"""Tiny fully connected networks as plain parameter pytrees.

Instant-NGP's MLPs are 1-2 hidden layers of 64 units; at that size, plain ``x @ W + b``
with parameters in a list of dicts is what XLA fuses best and keeps the train step's
pytree trivial to checkpoint, shard and prune.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def init_mlp(key: jax.Array, sizes: list[int]) -> list[dict]:
    """He-uniform weights and zero biases for layers ``sizes[0] -> ... -> sizes[-1]``."""
    keys = jax.random.split(key, len(sizes) - 1)
    layers = []
    for k, n_in, n_out in zip(keys, sizes[:-1], sizes[1:]):
        limit = jnp.sqrt(6.0 / n_in)
        w = jax.random.uniform(k, (n_in, n_out), jnp.float32, -limit, limit)
        layers.append({"w": w, "b": jnp.zeros((n_out,), jnp.float32)})
    return layers


def apply_mlp(
    params: list[dict], x: Float[Array, "... I"], modulate: Callable | None = None,
    scale: Float[Array, "..."] | None = None,
) -> Float[Array, "... O"]:
    """ReLU hidden layers, linear output: ``h_{k+1} = relu(h_k W_k + b_k)``.

    ``modulate`` (CAM) maps the first hidden layer's pre-activation ``h_1`` to a
    modulated one before its ReLU. ``scale`` multiplies the input per point, applied as
    ``(x s) W_0 = s (x W_0)``: after the product, where its backward is one product
    with the narrow output (XLA otherwise recomputes ``s`` inside every consumer of the
    input's gradient, 128 of them for a 16-level grid).
    """
    for i, layer in enumerate(params[:-1]):
        h = x @ layer["w"]
        if i == 0 and scale is not None:
            h = h * scale[..., None].astype(h.dtype)
        h = h + layer["b"]
        if i == 0 and modulate is not None:
            h = modulate(h)
        x = jax.nn.relu(h)
    return x @ params[-1]["w"] + params[-1]["b"]
