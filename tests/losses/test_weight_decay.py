"""Grid weight decay (Zip-NeRF) by what it asks of a field: the sum over levels of each
level's mean squared feature, so a small level weighs as much as a large one; under Adam
it leaves the entries the colour loss reads and shrinks the ones nothing else reads; it
names the encoding it cannot decay."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sparsefield.config import preset_config
from sparsefield.fields.frequency import Frequency
from sparsefield.fields.grid import HashGrid
from sparsefield.losses.base import LossInputs
from sparsefield.losses.regularizers import Regularizers
from sparsefield.losses.weight_decay import GridWeightDecay
from sparsefield.runs import build_method


def inputs(table, encoding=None):
    return LossInputs(rays=None, batch={}, step=0, encoding=encoding or HashGrid(levels=table.shape[0]),
                      encoding_params={"table": jnp.asarray(table, jnp.float32)})


def test_weight_decay_is_the_sum_over_levels_of_the_mean_square():
    table = np.zeros((2, 4, 2), np.float32)
    table[0, 0, 0] = 2.0  # level 0: mean square 4 / 8
    table[1] = 1.0  # level 1: mean square 1
    np.testing.assert_allclose(GridWeightDecay()(inputs(table)), 1.5, rtol=1e-6)
    assert float(GridWeightDecay()(inputs(np.zeros((3, 8, 2))))) == 0.0


def test_weight_decay_under_adam_shrinks_only_the_entries_nothing_else_reads():
    """A colour-like loss pins entry 0 of each level at 1; the decay alone acts on the rest."""
    term = GridWeightDecay(weight=0.1)
    table = jnp.full((2, 16, 1), 0.5)

    def loss(t):
        fit = jnp.sum((t[:, 0, 0] - 1.0) ** 2)
        return fit + term.weight * term(inputs(t))

    opt = optax.adam(1e-2, eps=1e-15)
    state = opt.init(table)
    for _ in range(300):
        updates, state = opt.update(jax.grad(loss)(table), state)
        table = optax.apply_updates(table, updates)
    np.testing.assert_allclose(table[:, 0, 0], 1.0, atol=0.02)  # read by the fit: kept
    assert float(jnp.abs(table[:, 1:]).max()) < 0.05  # read by nothing else: gone towards 0


def test_weight_decay_names_an_encoding_without_tables():
    enc = Frequency()
    with pytest.raises(ValueError, match="grid weight decay needs a grid encoding, not Frequency"):
        GridWeightDecay()(LossInputs(rays=None, batch={}, step=0, encoding=enc, encoding_params={}))


def test_weight_decay_is_a_reg_flag_that_needs_tables():
    terms = Regularizers(weight_decay=GridWeightDecay()).terms()
    assert list(terms) == ["weight_decay"] and terms["weight_decay"].needs == frozenset({"tables"})


def test_the_few_shot_radiance_field_decays_its_grid_and_a_frequency_field_leaves_it_out():
    bbox = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    config = preset_config("fewshot", views=8)
    assert config.method == "nerf" and isinstance(build_method(config, bbox).terms["weight_decay"], GridWeightDecay)
    frequency = dataclasses.replace(config, field=dataclasses.replace(config.field, encoding=Frequency()))
    method = build_method(frequency, bbox)
    assert "weight_decay" not in method.terms and method.skipped == ["weight_decay"]
