"""The contract between renderers and loss terms.

A loss term is a frozen dataclass holding its hyperparameters (weight and schedule
included). ``term(inputs)`` returns the unweighted scalar and ``term.weight_at(step)``
its weight; the train step builds ``losses[name] = term.weight_at(step) * term(inputs)``,
sums them and logs each by name.

``inputs`` is a `LossInputs`: the rendered training rays (a
`sparsefield.renderers.render.RenderedRays`), the ray batch they were drawn from, the
training step and, where a term declares it needs them, unseen-view patches and the
field's tables. A term says what it reads beyond ``rays`` and ``batch["rgb"]`` in
``needs`` (a subset of `NEEDS`); a method renders only what the terms it runs need, and
names the terms it cannot serve (`usable_terms`). Terms average over the complete rays
only (``rays.complete``), like the colour loss.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from jaxtyping import Array, Float

EPS = 1e-4
"""Opacities are clipped to ``[EPS, 1 - EPS]`` inside logarithms."""

NEEDS = {
    "samples": "the evaluated samples along each ray (``rays.samples``, dense ``t``/``s``)",
    "patches": "renders of unseen-view patches (``inputs.patches``, ``inputs.patch_shape``)",
    "alpha": "ground-truth alpha masks of the training pixels (``batch['alpha']``)",
    "tables": "the field's encoding and its parameters (``inputs.encoding``, ``inputs.encoding_params``)",
    "keypoints": "rays through the training views' triangulated keypoints, with their depths "
                 "(``inputs.keypoints``, `sparsefield.losses.keypoints.KeypointTargets`)",
    "binocular": "the method's own render from a camera shifted sideways, sampled where each ray's surface "
                 "point lands (``inputs.binocular``, `sparsefield.losses.consistency.ShiftedView`)",
    "density": "the field's density (``inputs.density``: density_fn, box, sample spacing, a key)",
    "views": "every training view's image and camera (``inputs.views``), and each ray's own view and ray "
             "(``batch['view']``, ``batch['origins']``, ``batch['directions']``)",
}
"""What a loss term may need beyond the rendered colour, depth and opacity of its rays."""


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """Everything a loss term may read (see the module docstring).

    Attributes:
        rays: the training rays as rendered (`RenderedRays`).
        batch: the ray batch: ``rgb [R, 3]`` targets, ``background [R, 3]``, and
            ``alpha [R]`` when the data has masks.
        step: the training step (a traced scalar).
        patches: unseen-view patch rays, ``N_p P^2`` of them patch-major (`RenderedRays`),
            for terms that need ``patches``; None otherwise.
        patch_shape: ``(N_p, P, P)``: how ``patches`` folds into images.
        encoding: the field's encoding config (terms that need ``tables``).
        encoding_params: its parameters.
        views: the training views (`sparsefield.datasets.batches.RayData`: ``images``,
            ``cameras``), for terms that need ``views``.
        keypoints: rays through keypoints and their targets (`KeypointTargets`), for
            terms that need ``keypoints``.
        binocular: the render from a shifted camera, sampled at each ray's surface point
            (`ShiftedView`), for terms that need ``binocular``.
        density: ``(density_fn, box [2, 3], sample spacing, key)``: the field's density
            per unit length of the box, for terms that need ``density``.
    """

    rays: object
    batch: dict
    step: object
    patches: object | None = None
    patch_shape: tuple[int, int, int] = (0, 0, 0)
    encoding: object | None = None
    encoding_params: object | None = None
    views: object | None = None
    keypoints: object | None = None
    binocular: object | None = None
    density: object | None = None


class ConstantWeight:
    """Mixin for terms whose weight does not change over training: ``weight_at(step)``
    is the term's ``weight`` field."""

    def weight_at(self, step):
        return self.weight


def active_terms(terms: dict, step: int) -> dict:
    """The terms still on at ``step``: a term with an ``until`` step (its weight is 0 from
    then on) is left out from that step, so that a method can compile a step that no
    longer renders what it alone reads (keypoint rays, patches)."""
    return {n: t for n, t in terms.items() if getattr(t, "until", None) is None or step < t.until}


def masked_mean(values: Float[Array, " R"], keep: Float[Array, " R"]) -> Float[Array, ""]:
    """Mean of ``values`` over the rays with ``keep = 1``."""
    return jnp.sum(values * keep) / jnp.maximum(jnp.sum(keep), 1.0)


def mean_over_complete(per_ray: Float[Array, " R"], rays) -> Float[Array, ""]:
    """`masked_mean` over the rays that fit in the sample budget (``rays.complete``)."""
    return masked_mean(per_ray, rays.complete.astype(per_ray.dtype))


def binary_entropy(o: Float[Array, " R"]) -> Float[Array, " R"]:
    """``-(o log o + (1 - o) log(1 - o))`` in nats, ``o`` clipped to ``[EPS, 1 - EPS]``."""
    o = jnp.clip(o, EPS, 1.0 - EPS)
    return -(o * jnp.log(o) + (1.0 - o) * jnp.log(1.0 - o))


def binary_cross_entropy(o: Float[Array, " R"], a: Float[Array, " R"]) -> Float[Array, " R"]:
    """``-(a log o + (1 - a) log(1 - o))``, ``o`` clipped to ``[EPS, 1 - EPS]``."""
    o = jnp.clip(o, EPS, 1.0 - EPS)
    return -(a * jnp.log(o) + (1.0 - a) * jnp.log(1.0 - o))


def usable_terms(terms: dict, supplies: frozenset[str]) -> tuple[dict, list[str]]:
    """Split ``name -> term`` into the terms a method can serve (their ``needs`` are all
    in ``supplies``) and the names of the rest."""
    usable = {n: t for n, t in terms.items() if set(getattr(t, "needs", ())) <= supplies}
    return usable, [n for n in terms if n not in usable]
