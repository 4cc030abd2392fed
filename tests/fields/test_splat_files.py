"""Compact splat files: ``.spz`` against hand-worked bytes, within its quantisation steps,
and the half turn between PLY and SPZ axes; ``.splat``; and, where node and PlayCanvas's
``splat-transform`` are installed (``.ci/run`` installs them), what that real reader (the
reference spz library compiled to WebAssembly, for ``.spz``) makes of our files."""

import gzip
import shutil
import struct
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest
from plyfile import PlyData

from sparsefield.config import RunConfig
from sparsefield.fields import gaussians as gs
from sparsefield.fields import splat_files as sf
from sparsefield.methods.splat import SplatMethod
from sparsefield.renderers.splatting import covariance3d

SPLAT_TRANSFORM = shutil.which("splat-transform") if shutil.which("node") else None
needs_reader = pytest.mark.skipif(SPLAT_TRANSFORM is None, reason="node or splat-transform absent "
                                  "(npm install -g @playcanvas/splat-transform@2.7.1)")
HALF_TURN = np.diag([1.0, -1.0, -1.0])  # PLY (right, down, front) -> SPZ (right, up, back)


def scene(n=256, seed=0):
    """Random Gaussians inside every spz range: colour bytes hold |f_dc| <= 3.3, scale
    bytes log-scales in [-10, 5.9], SH bytes [-1, 1)."""
    rng = np.random.default_rng(seed)
    p = {"means": rng.uniform(-3, 3, (n, 3)), "log_scales": rng.uniform(-8, 2, (n, 3)),
         "quats": rng.normal(size=(n, 4)), "logit_opacities": rng.uniform(-5, 5, n),
         "sh_dc": rng.uniform(-3, 3, (n, 3)), "sh_rest": rng.uniform(-0.99, 0.99, (n, 15, 3))}
    return {k: v.astype(np.float32) for k, v in p.items()}, rng.uniform(size=n) < 0.9


def sigmoid(x):
    return 1 / (1 + np.exp(-x.astype(np.float64)))


def unit_quats(q):
    """Unit quaternions with w >= 0 (q and -q are one rotation)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    return q * np.where(q[:, :1] < 0, -1, 1)


def test_spz_bytes_of_one_gaussian_by_hand(tmp_path):
    """Position (1, 0.5, -2) is (1, -0.5, 2) in SPZ axes: 4096, -2048, 8192 at 12 bits;
    alpha 0.5 -> 127.5 -> 128 (halves away from zero); colour 127.5 + 38.25 f_dc; scale
    16 (log s + 10); identity rotation = index 3 (w) in the top two bits. SH at degree 2
    (8 coefficients, the 9th dropped): 0.5 on coefficient 0 (odd in y) -> -0.5 -> 64; on 1
    (odd in z) -> 64; on 2 (x) -> 192; 0.3 on 3 (xy) -> -0.3 -> 90, snapped to 16s -> 96."""
    sh = np.zeros((1, 15, 3), np.float32)
    sh[0, 0, 0], sh[0, 1, 1], sh[0, 2, 2], sh[0, 3, 0], sh[0, 8, 0] = 0.5, 0.5, 0.5, 0.3, 0.9
    one = {"means": np.array([[1.0, 0.5, -2.0]], np.float32), "log_scales": np.array([[0.0, -1.0, 1.5]], np.float32),
           "quats": np.array([[2.0, 0, 0, 0]], np.float32), "logit_opacities": np.zeros(1, np.float32),
           "sh_dc": np.array([[0.0, 1.0, -1.0]], np.float32), "sh_rest": sh}
    path = tmp_path / "one.spz"
    assert sf.write_spz(path, one, np.ones(1, bool), degree=2) == 1
    data = gzip.decompress(path.read_bytes())
    assert struct.unpack("<IIIBBBB", data[:16]) == (0x5053474E, 3, 1, 2, 12, 0, 0)
    expected_sh = np.full(24, 128, np.uint8)
    expected_sh[[0, 4, 8, 9]] = [64, 64, 192, 96]
    body = (bytes([0x00, 0x10, 0x00, 0x00, 0xF8, 0xFF, 0x00, 0x20, 0x00]) + bytes([128]) + bytes([128, 166, 89])
            + bytes([160, 144, 184]) + bytes([0, 0, 0, 0xC0]) + expected_sh.tobytes())
    assert data[16:] == body


@pytest.mark.parametrize("version, degree", [(3, 3), (2, 3), (3, 0)])
def test_spz_round_trips_within_its_quantisation(tmp_path, version, degree):
    params, alive = scene()
    path = tmp_path / "scene.spz"
    n = sf.write_spz(path, params, alive, degree=degree, version=version)
    back, p = sf.read_spz(path), {k: v[alive] for k, v in params.items()}
    assert n == int(alive.sum()) and back["degree"] == degree and back["means"].shape == (n, 3)
    assert len(gzip.decompress(path.read_bytes())) == 16 + n * (19 + (version == 3) + 3 * ((degree + 1) ** 2 - 1))
    bound = lambda key: np.abs(back[key] - p[key]).max()  # noqa: E731
    assert bound("means") <= 2.0**-13 + 1e-6
    assert bound("log_scales") <= 1 / 32 + 1e-6
    assert bound("sh_dc") <= 0.5 / (0.15 * 255) + 1e-6
    assert np.abs(sigmoid(back["logit_opacities"]) - sigmoid(p["logit_opacities"])).max() <= 0.5 / 255 + 1e-6
    rest = p["sh_rest"] * (np.arange(15) < (degree + 1) ** 2 - 1)[:, None]
    assert np.abs(back["sh_rest"][:, :3] - rest[:, :3]).max() <= 4.5 / 128 + 1e-6  # 5 bits: buckets of 8/128
    assert np.abs(back["sh_rest"][:, 3:] - rest[:, 3:]).max() <= 8.5 / 128 + 1e-6  # 4 bits: buckets of 16/128
    q, q_back = unit_quats(p["quats"]), unit_quats(back["quats"])
    if version == 3:  # 9 bits of sqrt(1/2) per small component; the largest, sqrt(1 - sum), up to 3x that
        assert np.abs(q_back - q).max() <= 3 * 0.5 / 511 * np.sqrt(0.5) + 1e-5
    else:  # 8 bits of (x, y, z); w from sqrt(1 - |xyz|^2) is coarse when w is small
        assert np.abs(q_back[:, 1:] - q[:, 1:]).max() <= 0.5 / 127.5 + 1e-5


def test_spz_axes_are_a_half_turn_about_x():
    """`to_spz_frame` is the rotation diag(1, -1, -1): positions and covariances turn with
    it, and every Gaussian's SH colour seen from the turned camera is unchanged."""
    params, _ = scene(16)
    turned = sf.to_spz_frame(params)
    np.testing.assert_allclose(turned["means"], params["means"] @ HALF_TURN.T)
    cov = lambda p: np.asarray(covariance3d(jnp.exp(p["log_scales"]), p["quats"]))  # noqa: E731
    np.testing.assert_allclose(cov(turned), HALF_TURN @ cov(params) @ HALF_TURN.T, rtol=1e-4, atol=1e-6)
    center = np.array([0.3, -4.0, 2.5], np.float32)
    seen = gs.gaussian_colors({k: jnp.asarray(v) for k, v in params.items()}, center, 3)
    seen_turned = gs.gaussian_colors({k: jnp.asarray(v) for k, v in turned.items()}, HALF_TURN @ center, 3)
    np.testing.assert_allclose(seen_turned, seen, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sf.to_spz_frame(turned)["sh_rest"], params["sh_rest"])


def test_spz_fixed_point_gives_up_fraction_bits_for_a_large_scene(tmp_path):
    params, alive = scene(8)
    params["means"][0] = [5000.0, -3.0, 0.25]
    sf.write_spz(tmp_path / "big.spz", params, np.ones(8, bool))
    assert gzip.decompress((tmp_path / "big.spz").read_bytes())[13] == 10  # 5000 * 2^10 < 2^23
    np.testing.assert_allclose(sf.read_spz(tmp_path / "big.spz")["means"], params["means"], atol=2.0**-11)
    with pytest.raises(ValueError, match="24-bit"):
        sf.fractional_bits(np.array([[1e7, 0.0, 0.0]]))


def test_splat_file_is_32_bytes_a_gaussian_largest_first(tmp_path):
    params, alive = scene(64)
    path = tmp_path / "scene.splat"
    assert sf.write_splat(path, params, alive) == alive.sum() and path.stat().st_size == 32 * alive.sum()
    back, p = sf.read_splat(path), {k: v[alive] for k, v in params.items()}
    order = np.argsort(-np.exp(p["log_scales"].sum(-1)) / (1 + np.exp(-p["logit_opacities"])))
    np.testing.assert_array_equal(back["means"], p["means"][order])
    np.testing.assert_allclose(back["log_scales"], p["log_scales"][order], atol=1e-5)
    lost = np.clip(0.5 + gs.SH_C0 * p["sh_dc"][order], 0, 1) - (0.5 + gs.SH_C0 * back["sh_dc"])
    assert np.all((lost > -1e-6) & (lost < 1 / 255 + 1e-6))  # bytes truncate, as convert.py does
    lost = sigmoid(p["logit_opacities"][order]) - sigmoid(back["logit_opacities"])
    assert np.all((lost > -1e-6) & (lost < 1 / 255 + 1e-6))
    q = p["quats"][order] / np.linalg.norm(p["quats"][order], axis=-1, keepdims=True)
    assert np.abs(back["quats"] - q).max() < 1 / 128 + 1e-6


# ---- a real reader: splat-transform ---------------------------------------------------------


def convert(*args):
    """Run ``splat-transform -w ARGS`` (input, output, options); fail with what it said."""
    run = subprocess.run([SPLAT_TRANSFORM, "-w", *map(str, args)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def ply_columns(path) -> dict:
    vertex = PlyData.read(str(path))["vertex"]
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


@needs_reader
@pytest.mark.parametrize("version", [2, 3])
def test_splat_transform_reads_our_spz_as_we_do(tmp_path, version):
    """The reference decoder (unpacking to PLY axes) and `read_spz` agree to float
    rounding, so the writer's quantisation bounds above hold for the real reader too."""
    params, alive = scene()
    sf.write_spz(tmp_path / "scene.spz", params, alive, version=version)
    convert(tmp_path / "scene.spz", tmp_path / "decoded.ply")
    ref, ours = ply_columns(tmp_path / "decoded.ply"), sf.read_spz(tmp_path / "scene.spz")
    stack = lambda *names: np.stack([ref[name] for name in names], -1)  # noqa: E731
    np.testing.assert_allclose(stack("x", "y", "z"), ours["means"], atol=1e-6)
    np.testing.assert_allclose(stack("scale_0", "scale_1", "scale_2"), ours["log_scales"], atol=1e-6)
    np.testing.assert_allclose(stack("f_dc_0", "f_dc_1", "f_dc_2"), ours["sh_dc"], atol=1e-6)
    np.testing.assert_allclose(ref["opacity"], ours["logit_opacities"], atol=1e-5)
    np.testing.assert_allclose(stack(*(f"rot_{i}" for i in range(4))), ours["quats"], atol=2e-5)
    rest = stack(*(f"f_rest_{i}" for i in range(45))).reshape(-1, 3, 15).transpose(0, 2, 1)
    np.testing.assert_allclose(rest, ours["sh_rest"], atol=1e-6)


@needs_reader
def test_our_spz_is_the_reference_packers_byte_for_byte(tmp_path):
    """splat-transform packs our PLY (as RDF) into version 3 with the reference library:
    the same bytes as `write_spz`, header to the last SH byte."""
    params, alive = scene()
    gs.write_ply(tmp_path / "scene.splat.ply", params, alive)
    convert(tmp_path / "scene.splat.ply", tmp_path / "reference.spz", "--spz-version", "3")
    sf.write_spz(tmp_path / "ours.spz", params, alive)
    reference = gzip.decompress((tmp_path / "reference.spz").read_bytes())
    assert gzip.decompress((tmp_path / "ours.spz").read_bytes()) == reference


@needs_reader
def test_splat_transform_reads_our_splat_as_we_do(tmp_path):
    params, alive = scene(64)
    sf.write_splat(tmp_path / "scene.splat", params, alive)
    convert(tmp_path / "scene.splat", tmp_path / "decoded.ply")
    ref, ours = ply_columns(tmp_path / "decoded.ply"), sf.read_splat(tmp_path / "scene.splat")
    stack = lambda *names: np.stack([ref[name] for name in names], -1)  # noqa: E731
    np.testing.assert_array_equal(stack("x", "y", "z"), ours["means"])
    np.testing.assert_allclose(stack("scale_0", "scale_1", "scale_2"), ours["log_scales"], atol=1e-5)
    np.testing.assert_allclose(stack("f_dc_0", "f_dc_1", "f_dc_2"), ours["sh_dc"], atol=1e-5)
    alpha = np.clip(1 / (1 + np.exp(-ours["logit_opacities"])), 1e-6, 1 - 1e-6)  # it clamps alpha
    np.testing.assert_allclose(ref["opacity"], np.log(alpha / (1 - alpha)), atol=1e-4)
    # it decodes a rotation byte as b / 127.5 - 1, antimatter15's viewer as (b - 128) / 128
    np.testing.assert_allclose(unit_quats(stack(*(f"rot_{i}" for i in range(4)))), unit_quats(ours["quats"]), atol=1e-2)


def test_splat_method_exports_by_the_name_of_the_file(tmp_path):
    """``.spz`` carries the SH degrees the run has switched on at its step (one every
    ``sh_every`` steps); ``.splat`` and ``.splat.ply`` every live Gaussian; a mesh name is
    left to the mesh export."""
    config = RunConfig()
    method = SplatMethod(config, np.array([[-1.0] * 3, [1.0] * 3]))
    params, alive = scene(32)
    state = {"params": params, "alive": alive, "step": np.int32(config.splat.gaussians.sh_every + 1)}
    assert method.export(state, tmp_path / "early.spz") == tmp_path / "early.spz"
    assert sf.read_spz(tmp_path / "early.spz")["degree"] == 1
    method.export(dict(state, step=np.int32(10**6)), tmp_path / "late.SPZ")
    assert sf.read_spz(tmp_path / "late.SPZ")["degree"] == config.splat.gaussians.sh_degree
    method.export(state, tmp_path / "scene.splat")
    method.export(state, tmp_path / "scene.splat.ply")
    assert len(sf.read_splat(tmp_path / "scene.splat")["means"]) == len(gs.read_ply(tmp_path / "scene.splat.ply")["means"])
    assert method.export(state, tmp_path / "mesh.ply") is None and not (tmp_path / "mesh.ply").exists()
