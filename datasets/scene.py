"""`SceneData`, the one value every loader returns, `DatasetError`, and the checks every
loader runs on what a user gives it.

A user's input is trusted for nothing: numbers read from a file pass `real_array` (real
dtype, shape, finite) where they are read; load arguments pass `check_load_args`; the
splits and the assembled scene pass `check_splits` and `check_scene`, the last line of
defence against values that were finite in the file but overflow on the way (float32
poses, rescaled LLFF bounds). Files themselves pass the gate in `images.read_file`.
"""

from __future__ import annotations

import dataclasses
import numbers
import reprlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..cameras import Cameras


class DatasetError(ValueError):
    """Bad input (a file or a load argument). The message names the file and the problem
    in one line: control characters and undecodable file-name bytes in either are shown
    escaped, so a hostile file name can neither break the line nor the terminal."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{printable(str(path))}: {printable(problem)}")


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, NUL, lone surrogate) escaped."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


@dataclasses.dataclass(frozen=True)
class SceneData:
    """Posed images of one scene.

    Attributes:
        images: ``[C, H, W, 3]`` float32 RGB in [0, 1], composited on ``background``.
        masks: ``[C, H, W]`` float32 alpha in [0, 1], or None when the images had none.
        cameras: the ``C`` cameras (numpy-backed `Cameras`).
        splits: split name (``train``, ``val``, ``test``) -> int indices into ``images``.
        bbox: ``[2, 3]`` world-space box (min, max) that holds the scene.
        near, far: ray range in world units.
        background: ``[3]`` colour the images were composited on.
        root: dataset folder.
        names: one name per image (its file path relative to ``root``).
        ndc: forward-facing capture (LLFF): rays should be mapped to normalised device
            coordinates (NeRF's ``ndc_rays`` with the near plane at camera-space
            ``z = -1``), where the scene fills ``[-1, 1]^3`` and ``t`` runs over [0, 1].
            ``near``, ``far`` and ``bbox`` stay in world units for renderers that march
            in world space.
        object_masks: ``[C, H, W]`` float32 in {0, 1}, 1 on the object, or None. Unlike
            ``masks`` the images are *not* composited with them (the photo background is
            real), so they must not drive background swapping or visual-hull carving;
            they select the pixels of masked metrics (DTU). nerfstudio's ``mask_path``
            masks load here too (1 = the pixel counts, 0 = ignore it).
        transform: ``[4, 4]`` similarity from the capture's own world coordinates to the
            scene's (cameras, ``bbox`` and points are in the scene's), or None for the
            identity. Loaders level and centre captures in arbitrary frames (COLMAP,
            nerfstudio); where a nerfstudio file records ``applied_transform`` the
            capture's world is the COLMAP model's. Its inverse maps exports back.
        outer_bbox: ``[2, 3]`` box out to which the file says content reaches beyond
            ``bbox`` (instant-ngp's ``aabb_scale`` cube), or None when ``bbox`` holds
            everything. ``bbox`` is the part to resolve finely; the rest is background: a
            run in the box composites it as the background colour, a contracted space
            (``render.space:contract``) models it.
    """

    images: np.ndarray
    masks: np.ndarray | None
    cameras: Cameras
    splits: dict[str, np.ndarray]
    bbox: np.ndarray
    near: float
    far: float
    background: np.ndarray
    root: Path
    names: list[str]
    ndc: bool = False
    object_masks: np.ndarray | None = None
    transform: np.ndarray | None = None
    outer_bbox: np.ndarray | None = None

    def split(self, name: str) -> np.ndarray:
        """Indices of one split; raises `DatasetError` if it is missing or empty."""
        ids = self.splits.get(name)
        if ids is None or len(ids) == 0:
            raise DatasetError(self.root, f"the '{name}' split is empty")
        return ids


def check_load_args(root, scale, background) -> tuple[Path, np.ndarray]:
    """Validate the arguments every loader takes; returns ``root`` as a Path and the
    background as a float32 RGB triple.

    Raises:
        DatasetError: ``scale`` is not a number in (0, 1] (0, negative, NaN, above 1, a
            string), ``background`` is not three numbers in [0, 1], or ``root`` is absent.
    """
    root = Path(root)
    real = isinstance(scale, numbers.Real) and not isinstance(scale, bool)
    if not (real and 0.0 < scale <= 1.0):
        raise DatasetError(root, f"scale must be a number in (0, 1], got {describe(scale)}")
    background = real_array(background, root, "background", (3,)).astype(np.float32)
    if not np.all((background >= 0.0) & (background <= 1.0)):
        raise DatasetError(root, f"background must be RGB in [0, 1], got {background.tolist()}")
    if not root.exists():
        raise DatasetError(root, "dataset folder does not exist")
    return root, background


def holdout_splits(count: int, every: int) -> dict[str, np.ndarray]:
    """Every ``every``-th image is test (from image 0), the rest train, no val."""
    ids = np.arange(count)
    return {"train": ids[ids % every != 0], "val": np.zeros(0, np.int64), "test": ids[ids % every == 0]}


def check_splits(splits: dict[str, np.ndarray], source) -> None:
    """Raise `DatasetError` naming ``source`` when the train split is empty (a one-image
    capture whose only image is held out for testing, an empty ``train_filenames``)."""
    if len(splits.get("train", ())) == 0:
        held = ", ".join(f"{len(v)} {k}" for k, v in splits.items() if k != "train" and len(v))
        raise DatasetError(source, f"the train split is empty ({held or 'no images'})")


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxstring, _REPR.maxother = 2, 4, 40, 40


def describe(value) -> str:
    """A short one-line description of a value read from a file, for error messages.

    `reprlib` bounds the depth and length, so a 100000-element list or a deeply nested
    one prints as a few dozen characters.
    """
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    return _REPR.repr(value)


def real_array(
    value,
    path,
    field: str,
    shape: tuple | None = None,
    *,
    finite: bool = True,
    row: Callable[[int], str] | None = None,
) -> np.ndarray:
    """``value`` (a JSON value or a numpy array) as float64, or `DatasetError`.

    The one check for numbers read from a file: it accepts real numbers only (Python
    int / float, numpy integer / floating dtypes; not bool, complex, object, strings or
    ragged lists), of ``shape`` (``None`` entries match any length; ``shape=None`` any
    shape), and, with ``finite``, no inf or NaN (JSON's ``1e999`` parses as inf).

    Args:
        path: the file, named in the message; field: the key, e.g. ``"'bbox'"``.
        row: names the leading index of a non-finite entry (``lambda k: f"image {k}: "``).

    Returns:
        The values as a float64 array of ``value``'s shape.
    """
    array = _numeric(value)
    if array is None or not _shape_matches(array.shape, shape):
        got = f"shape {array.shape}" if array is not None and shape != () else describe(value)
        raise DatasetError(path, f"{field} must be {_expected(shape)}, got {got}")
    with np.errstate(over="ignore"):  # float128 beyond float64's range: reported as inf below
        array = array.astype(np.float64)
    if finite and not np.all(np.isfinite(array)):
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        where = row(index[0]) if row is not None and index else ""
        raise DatasetError(path, f"{where}{field} has a non-finite value ({array[index]})")
    return array


def _numeric(value) -> np.ndarray | None:
    """``value`` as an integer or floating numpy array, or None when it is anything else."""
    if isinstance(value, np.ndarray):
        return value if value.dtype.kind in "iuf" else None
    # numpy would turn [1, True] into int64 and [1, "2"] into strings, so look at the
    # leaves first; iteratively, as a JSON list may be nested thousands deep.
    stack = [value]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        elif isinstance(x, (bool, np.bool_)) or not isinstance(x, _REAL_TYPES):
            return None
    try:
        return np.asarray(value, np.float64)
    except (ValueError, OverflowError):  # ragged, over 64 levels, an integer beyond float64
        return None


_REAL_TYPES = (int, float, np.integer, np.floating)


def _shape_matches(actual: tuple, wanted: tuple | None) -> bool:
    if wanted is None:
        return True
    return len(actual) == len(wanted) and all(w is None or w == a for a, w in zip(actual, wanted))


def _expected(shape: tuple | None) -> str:
    """``"a number"``, ``"a list of 3 numbers"``, ``"a 4x4 numeric matrix"``, ..."""
    if shape is None:
        return "numeric"
    if shape == ():
        return "a number"
    sizes = ["N" if s is None else str(s) for s in shape]
    if len(shape) == 1:
        return "a list of numbers" if shape[0] is None else f"a list of {sizes[0]} numbers"
    text = "x".join(sizes) + (" numeric matrix" if len(shape) == 2 else " numeric array")
    return ("an " if text[0] in "N8" else "a ") + text


def check_scene(scene: SceneData, source) -> SceneData:
    """``scene`` unchanged, or `DatasetError` naming ``source`` if a camera, the box or the
    ray range is not finite (or a focal length not positive, the box empty, near >= far).

    Every number was checked where it was read; this catches what overflows afterwards:
    a pose of 1e300 is finite in float64 but not in the float32 `Cameras`, and LLFF's
    rescale by ``1 / min(near)`` turns a tiny bound into inf.
    """
    cams = scene.cameras
    intr = np.stack([np.asarray(getattr(cams, k), np.float64) for k in ("fx", "fy", "cx", "cy")])
    good = np.isfinite(np.asarray(cams.c2w, np.float64)).all((1, 2)) & np.isfinite(intr).all(0)
    good &= (intr[0] > 0) & (intr[1] > 0)
    if not good.all():
        k = int(np.argmin(good))
        raise DatasetError(
            source,
            f"camera {k} ({scene.names[k]}): pose or intrinsics are not finite after loading "
            "(values too large for float32?)",
        )
    bbox = np.asarray(scene.bbox, np.float64)
    if bbox.shape != (2, 3) or not (np.all(np.isfinite(bbox)) and np.all(bbox[0] < bbox[1])):
        raise DatasetError(source, f"scene box is empty or not finite: {bbox.tolist()}")
    if not (np.isfinite(scene.far) and 0.0 <= scene.near < scene.far):
        raise DatasetError(
            source, f"ray range is not 0 <= near < far after loading: {scene.near}, {scene.far}"
        )
    return scene
