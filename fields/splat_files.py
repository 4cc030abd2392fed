"""Compact splat files other tools open: Niantic's ``.spz`` and antimatter15's ``.splat``
(the full-precision 3DGS PLY is `gaussians.write_ply`).

``.spz`` (versions 2 and 3, the gzip family; the reference implementation is
``nianticlabs/spz``, ``src/cc/load-spz.cc``) is a gzip stream of a 16-byte little-endian
header and six attribute blocks, each for all Gaussians in turn:

    header     u32 magic 0x5053474e ("NGSP"), u32 version, u32 count, u8 SH degree,
               u8 fractional bits, u8 flags (1: antialiased), u8 reserved (0)
    positions  3 x 24-bit signed fixed point, round(x 2^fractional bits)
    alphas     u8 round(255 sigmoid(logit))
    colours    u8 round(255 (0.15 f_dc + 0.5)) per channel (the DC coefficient, not SH_C0)
    scales     u8 round(16 (log s + 10)) per axis
    rotations  v2: 3 x u8 round(127.5 (q + 1)) of (x, y, z) of the unit quaternion with w >= 0;
               v3: one u32, 2 bits for the index of the largest |q_i| of (x, y, z, w), then the
               other three in order, 10 bits each: a sign bit and 9 bits of |q_i| / sqrt(1/2)
    SH         u8 per coefficient, coefficient-major, channel-minor (``sh_rest [N, K, 3]``
               as it lies), round(128 x + 128) snapped to buckets of 2^(8 - bits) (5 bits for
               degree 1, 4 for degrees 2 and 3: the reference's defaults)

SPZ stores right-up-back axes (RUB), the 3DGS PLY right-down-front (RDF), so the writer
turns the scene half a turn about x, as the reference does when packing from RDF: ``y, z``
of positions and of the quaternion's vector part change sign, and so do the SH
coefficients odd in ``y`` and ``z`` together (`SPZ_SH_FLIP`). A reader that unpacks to RDF
(splat-transform, the reference with ``to: RDF``) gets back the PLY's numbers.

``.splat`` (antimatter15/splat ``convert.py``) has no header; 32 bytes a Gaussian, sorted by
``exp(sum log s) sigmoid(logit)``, largest first: 3 float32 position, 3 float32 scales
(not logs), u8 RGBA ``trunc(255 (0.5 + SH_C0 f_dc), 255 sigmoid(logit))`` clipped, and u8
``trunc(128 q / |q| + 128)`` clipped for ``(w, x, y, z)``. No view-dependent colour.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from .gaussians import SH_C0

SPZ_MAGIC = 0x5053474E
SPZ_COLOR_SCALE = np.float32(0.15)
"""``colorScale`` of the reference: colour byte = 255 (0.15 f_dc + 0.5)."""
SPZ_SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)
"""Sign of each SH coefficient (degrees 1..3, 3DGS order) under ``(x, y, z) -> (x, -y, -z)``."""
_POSITION_FLIP = np.array([1, -1, -1], np.float32)
_QUAT_FLIP = np.array([1, 1, -1, -1], np.float32)  # (w, x, y, z)
_SQRT1_2 = np.float32(0.707106781186547524401)
_HEADER = struct.Struct("<IIIBBBB")


def write_spz(path: Path, params: dict, alive: np.ndarray, degree: int = 3, version: int = 3) -> int:
    """Write the live Gaussians as a ``.spz`` file (module docstring); returns their count.

    Args:
        params: the scene's arrays (`gaussians` module docstring), ``N`` slots.
        alive: ``[N]`` which slots to write.
        degree: SH degree kept (0..3); ``sh_rest`` beyond it is dropped.
        version: 3 (smallest-three rotations, what current readers expect) or 2 (older
            readers, e.g. spz-js).
    """
    if version not in (2, 3) or not 0 <= degree <= 3:
        raise ValueError(f"spz version {version} with SH degree {degree}: versions 2, 3 and degrees 0..3 are written")
    p = to_spz_frame({k: np.asarray(v, np.float32)[np.asarray(alive)] for k, v in params.items()})
    n, bits = len(p["means"]), fractional_bits(p["means"])
    header = np.frombuffer(_HEADER.pack(SPZ_MAGIC, version, n, degree, bits, 0, 0), np.uint8)
    blocks = [header, _pack_positions(p["means"], bits),
              _to_uint8(255.0 * _sigmoid(p["logit_opacities"])),
              _to_uint8(p["sh_dc"] * (SPZ_COLOR_SCALE * np.float32(255.0)) + np.float32(127.5)),
              _to_uint8((p["log_scales"] + np.float32(10.0)) * np.float32(16.0)),
              _pack_quats_v3(p["quats"]) if version == 3 else _pack_quats_v2(p["quats"]),
              _quantize_sh(p["sh_rest"][:, : (degree + 1) ** 2 - 1])]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(gzip.compress(b"".join(np.ascontiguousarray(b).tobytes() for b in blocks), mtime=0))
    return n


def read_spz(path: Path) -> dict:
    """Read a ``.spz`` file of version 1..3 back into the scene's arrays, in the PLY's axes.

    Returns:
        ``means, log_scales, quats (w, x, y, z), logit_opacities, sh_dc, sh_rest [n, 15, 3]``
        (zero past the file's SH degree) and ``degree``.
    """
    raw = Path(path).read_bytes()
    if raw[:4] == b"NGSP":
        raise ValueError(f"{path}: spz version 4 (zstd streams) is not supported; write version 3")
    data = gzip.decompress(raw)
    magic, version, n, degree, bits, _, _ = _HEADER.unpack_from(data)
    if magic != SPZ_MAGIC or not 1 <= version <= 3 or degree > 3:
        raise ValueError(f"{path}: not a spz file of version 1..3 with SH degree <= 3")
    k = (degree + 1) ** 2 - 1
    sizes = {"positions": n * 3 * (2 if version == 1 else 3), "alphas": n, "colors": 3 * n, "scales": 3 * n,
             "rotations": n * (4 if version == 3 else 3), "sh": n * k * 3}
    if len(data) != _HEADER.size + sum(sizes.values()):
        raise ValueError(f"{path}: {len(data)} bytes unpacked, expected {_HEADER.size + sum(sizes.values())}")
    block, at = {}, _HEADER.size
    for name, size in sizes.items():
        block[name], at = np.frombuffer(data, np.uint8, size, at), at + size
    if version == 1:
        means = np.frombuffer(block["positions"].tobytes(), "<f2").reshape(n, 3).astype(np.float32)
    else:
        b = block["positions"].reshape(n, 3, 3).astype(np.int32)
        fixed = b[..., 0] | (b[..., 1] << 8) | (b[..., 2] << 16)
        means = (fixed - ((fixed & 0x800000) << 1)).astype(np.float32) / np.float32(2**bits)
    sh = np.zeros((n, 15, 3), np.float32)
    sh[:, :k] = (block["sh"].reshape(n, k, 3).astype(np.float32) - 128.0) / 128.0
    alpha = block["alphas"].astype(np.float32) / 255.0
    quats = (_unpack_quats_v3 if version == 3 else _unpack_quats_v2)(block["rotations"])
    with np.errstate(divide="ignore"):
        params = {"means": means, "log_scales": block["scales"].reshape(n, 3) / np.float32(16.0) - np.float32(10.0),
                  "quats": quats,
                  "logit_opacities": np.log(alpha / (1.0 - alpha)),
                  "sh_dc": (block["colors"].reshape(n, 3) / np.float32(255.0) - np.float32(0.5)) / SPZ_COLOR_SCALE,
                  "sh_rest": sh}
    return dict(to_spz_frame(params), degree=degree)


def to_spz_frame(params: dict) -> dict:
    """Half a turn about x, PLY (RDF) <-> SPZ (RUB) axes; its own inverse (module docstring)."""
    return dict(params, means=params["means"] * _POSITION_FLIP, quats=params["quats"] * _QUAT_FLIP,
                sh_rest=params["sh_rest"] * SPZ_SH_FLIP[: params["sh_rest"].shape[1], None])


def fractional_bits(means: np.ndarray) -> int:
    """Fractional bits of the 24-bit positions: 12 (the reference's, 1/4096) unless the
    scene reaches past +-2048, then fewer, so that ``round(|x| 2^bits) < 2^23``."""
    reach = float(np.max(np.abs(means), initial=0.0))
    for bits in range(12, -1, -1):
        if reach * 2**bits < 2**23 - 1:
            return bits
    raise ValueError(f"positions reach {reach:g}: past the 24-bit fixed point of spz")


def write_splat(path: Path, params: dict, alive: np.ndarray) -> int:
    """Write the live Gaussians as an antimatter15 ``.splat`` file (module docstring);
    returns their count. Colour is the DC term only."""
    p = {k: np.asarray(v, np.float32)[np.asarray(alive)] for k, v in params.items()}
    opacity = _sigmoid(p["logit_opacities"].astype(np.float64))
    order = np.argsort(-np.exp(p["log_scales"].astype(np.float64).sum(-1)) * opacity, kind="stable")
    q = p["quats"] / np.linalg.norm(p["quats"], axis=-1, keepdims=True)
    rgba = np.concatenate([0.5 + SH_C0 * p["sh_dc"].astype(np.float64), opacity[:, None]], -1) * 255
    record = np.dtype([("xyz", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    out = np.empty(len(order), record)
    out["xyz"], out["scale"] = p["means"][order], np.exp(p["log_scales"][order])
    out["rgba"] = np.clip(rgba[order], 0, 255).astype(np.uint8)
    out["rot"] = np.clip(q[order] * 128 + 128, 0, 255).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(out.tobytes())
    return len(out)


def read_splat(path: Path) -> dict:
    """Read a ``.splat`` file into ``means, log_scales, quats (w, x, y, z, unnormalised),
    logit_opacities, sh_dc`` (in the file's order)."""
    raw = Path(path).read_bytes()
    if len(raw) % 32:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of 32-byte splats")
    f = np.frombuffer(raw, "<f4").reshape(-1, 8)
    b = np.frombuffer(raw, np.uint8).reshape(-1, 32).astype(np.float32)
    alpha = b[:, 27] / 255.0
    with np.errstate(divide="ignore"):
        return {"means": f[:, :3].copy(), "log_scales": np.log(f[:, 3:6]), "quats": (b[:, 28:] - 128.0) / 128.0,
                "logit_opacities": np.log(alpha / (1.0 - alpha)), "sh_dc": (b[:, 24:27] / 255.0 - 0.5) / SH_C0}


# ---- packing --------------------------------------------------------------------------------


def _round(x: np.ndarray) -> np.ndarray:
    """C's ``round``: halves away from zero (numpy's ``round`` goes to even)."""
    x = np.asarray(x, np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(_round(x), 0, 255).astype(np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # a logit below -88 gives exp overflow, and alpha 0
        return 1 / (1 + np.exp(-x))


def _pack_positions(means: np.ndarray, bits: int) -> np.ndarray:
    """``[n, 3]`` -> ``[n, 3, 3]`` bytes of 24-bit two's complement, least significant first."""
    fixed = _round(means * np.float32(2**bits)).astype(np.int32)
    return ((fixed[..., None] >> np.array([0, 8, 16])) & 0xFF).astype(np.uint8)


def _quantize_sh(sh: np.ndarray, sh1_bits: int = 5, rest_bits: int = 4) -> np.ndarray:
    """The reference's ``quantizeSH``: ``round(128 x) + 128``, snapped to the nearest
    multiple of ``2^(8 - bits)`` (degree 1: ``sh1_bits``, higher: ``rest_bits``), clipped."""
    q = (_round(sh * np.float32(128.0)) + 128).astype(np.int64)
    bucket = np.where(np.arange(sh.shape[1]) < 3, 1 << (8 - sh1_bits), 1 << (8 - rest_bits))[:, None]
    q = np.maximum(q, 0) + bucket // 2  # the clip to >= 0 first keeps C's truncating division
    return np.clip(q // bucket * bucket, 0, 255).astype(np.uint8)


def _pack_quats_v2(quats: np.ndarray) -> np.ndarray:
    """``(x, y, z)`` of the unit quaternion turned to ``w >= 0``, ``round(127.5 (q + 1))``."""
    q = quats[:, [1, 2, 3, 0]] / np.linalg.norm(quats, axis=-1, keepdims=True)
    q = q * np.where(q[:, 3:] < 0, np.float32(-127.5), np.float32(127.5)) + np.float32(127.5)
    return _to_uint8(q[:, :3])


def _pack_quats_v3(quats: np.ndarray) -> np.ndarray:
    """Smallest three of ``(x, y, z, w)``: the largest's index in bits 30..31, then the
    other three in order, each 10 bits (sign relative to the largest's, 9-bit magnitude)."""
    q = quats[:, [1, 2, 3, 0]] / np.linalg.norm(quats, axis=-1, keepdims=True)
    largest = np.argmax(np.abs(q), -1)
    negate = np.take_along_axis(q, largest[:, None], -1)[:, 0] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        sign = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = (np.float32(511) * (np.abs(q[:, i]) / _SQRT1_2) + np.float32(0.5)).astype(np.uint32)
        comp = np.where(largest == i, comp, (comp << np.uint32(10)) | (sign << np.uint32(9)) | np.minimum(mag, 511))
    return comp.astype("<u4").view(np.uint8).reshape(-1, 4)


def _unpack_quats_v2(raw: np.ndarray) -> np.ndarray:
    xyz = raw.reshape(-1, 3).astype(np.float32) / np.float32(127.5) - 1
    w = np.sqrt(np.maximum(0.0, 1.0 - np.sum(xyz * xyz, -1, keepdims=True)))
    return np.concatenate([w, xyz], -1)


def _unpack_quats_v3(raw: np.ndarray) -> np.ndarray:
    comp = raw.reshape(-1, 4).copy().view("<u4")[:, 0]
    largest = comp >> 30
    q = np.zeros((len(comp), 4), np.float32)
    for i in range(3, -1, -1):
        value = _SQRT1_2 * (comp & 511).astype(np.float32) / np.float32(511)
        value = np.where((comp >> 9) & 1, -value, value)
        q[:, i] = np.where(largest == i, 0.0, value)
        comp = np.where(largest == i, comp, comp >> 10)
    rows = np.arange(len(q))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - np.sum(q * q, -1)))
    return q[:, [3, 0, 1, 2]]
