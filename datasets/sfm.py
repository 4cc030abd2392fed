"""Poses for photos that come without them: structure from motion with pycolmap, on the CPU.

Owns `estimate_poses` (``sparsefield poses IMAGES_DIR --out DATA_DIR``) and its options
`SfmConfig`: checking the photos, SIFT features, exhaustive or sequential matching,
incremental mapping, choosing one model, removing lens distortion (sparsefield renders
pinhole rays), and writing a COLMAP dataset that `load_colmap` reads:
``DATA_DIR/images/<the photos' own names>`` and ``DATA_DIR/sparse/0/*.bin`` with the
sparse points. Every way SfM fails on a sparse capture ends in one `DatasetError` that
says what happened and what to try; pycolmap's own log is silenced.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import pycolmap
from PIL import Image

from .colmap_features import extraction_options, keypoint_counts, quiet_colmap, run_colmap
from .images import find_images, inside, one_line
from .scene import DatasetError

CameraModel = Literal["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV"]
"""COLMAP camera models that `load_colmap` reads (its ``SUPPORTED_MODELS``)."""
MIN_PAIR_INLIERS = 15
"""Verified matches a pair needs to count as connected (COLMAP's ``min_num_inliers``)."""
NEGLIGIBLE_DISTORTION_PX = 0.1
"""Largest shift (pixels, at the image border) that distortion may cause and still be
dropped without resampling the photos."""


@dataclasses.dataclass(frozen=True)
class SfmConfig:
    """Options of `estimate_poses`."""

    camera_model: CameraModel = "SIMPLE_RADIAL"
    """COLMAP camera model: focal length(s), principal point and distortion terms.
    ``SIMPLE_RADIAL`` (f, cx, cy, k) suits most photos; ``SIMPLE_PINHOLE`` suits rendered
    or already undistorted images."""
    single_camera: bool = True
    """All photos share one camera (one set of intrinsics): the usual single-camera,
    fixed-zoom capture, and the most constrained fit. Off: one camera per photo."""
    focal: float | None = None
    """Known focal length in pixels of the full-size photos (f); held fixed in bundle
    adjustment. None: estimated (started from 1.2 x the longer side)."""
    matcher: Literal["exhaustive", "sequential"] = "exhaustive"
    """Which photo pairs are matched: ``exhaustive`` every pair (n(n-1)/2, right for the
    tens of photos of a sparse capture); ``sequential`` each photo with the 10 after it in
    name order and those 2^k further (video frames, long walks)."""
    max_image_size: int = 3200
    """Longer side in pixels that photos are downscaled to for feature extraction."""
    num_threads: int = -1
    """CPU threads for extraction, matching and mapping; -1: all cores."""
    min_registered: float = 0.75
    """Smallest share of the photos, in (0, 1], that the kept model must register."""
    undistort: bool = True
    """Resample the photos to a pinhole camera when the fitted distortion moves pixels by
    more than `NEGLIGIBLE_DISTORTION_PX` (sparsefield ignores distortion terms)."""
    seed: int = 0
    """Seed of COLMAP's RANSAC and mapper (reruns on one thread give the same poses)."""

    def __post_init__(self):
        if not 0.0 < self.min_registered <= 1.0:
            raise ValueError(f"min_registered must be in (0, 1], got {self.min_registered}")
        if self.focal is not None and not self.focal > 0:
            raise ValueError(f"focal must be a positive number of pixels, got {self.focal}")


@dataclasses.dataclass(frozen=True)
class SfmResult:
    """What `estimate_poses` made: the dataset folder and the model's statistics."""

    root: Path
    registered: list[str]
    """Names of the photos with a pose (those in ``root/images``)."""
    unregistered: list[str]
    num_points: int
    mean_reprojection_error: float
    """Mean distance in pixels between features and their projected 3D points."""
    num_models: int
    camera_model: str
    """Model written to ``cameras.bin`` (pinhole after undistortion)."""


def estimate_poses(
    images_dir, out_dir, config: SfmConfig = SfmConfig(), echo: Callable[[str], None] = print
) -> SfmResult:
    """Recover camera poses and sparse points of a folder of photos; write a COLMAP dataset.

    SIFT features (affine-adapted, for the wide baselines of sparse captures), matching
    verified by epipolar geometry with guided re-matching, incremental mapping with
    bundle adjustment (reprojection error ``sum ||pi(K, R X + t) - x||^2``), then the
    largest model. Everything is built in a temporary sibling of ``out_dir`` that is
    renamed into place at the end, so an interrupted run leaves nothing behind.

    Args:
        images_dir: folder of ``.png`` / ``.jpg`` photos (not searched recursively); it is
            only read.
        out_dir: dataset folder to create; must not exist or be empty.
        config: the options.
        echo: receives a few progress lines.

    Returns:
        `SfmResult`; ``out_dir`` then holds ``images/`` (copies of the registered photos,
        same names) and ``sparse/0/{cameras,images,points3D}.bin``.

    Raises:
        DatasetError: bad input (missing folder, no or unreadable photos, different sizes,
            an existing non-empty ``out_dir``) or an SfM failure (too few matches, too few
            photos registered), in one line that says what to try.
    """
    images_dir, out_dir = Path(images_dir), Path(out_dir)
    names, size = check_photos(images_dir, out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would outlive the rename
        with quiet_colmap():
            result = _reconstruct(images_dir, names, size, tmp, config, echo)
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    echo(f"wrote {out_dir} ({len(result.registered)} images, {result.camera_model} camera)")
    return dataclasses.replace(result, root=out_dir)


def check_photos(images_dir: Path, out_dir: Path) -> tuple[list[str], tuple[int, int]]:
    """Names of the photos in ``images_dir`` and their shared ``(W, H)``.

    Every photo is decoded in full, so a truncated file fails here with its name rather
    than later inside COLMAP.

    Raises:
        DatasetError: missing folder, no photos, an unreadable photo, photos of different
            sizes, or an ``out_dir`` that is non-empty or inside ``images_dir``.
    """
    if not images_dir.is_dir():
        raise DatasetError(images_dir, "photo folder does not exist")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise DatasetError(out_dir, "output folder exists and is not empty; choose a new --out")
    if inside(out_dir, images_dir):
        raise DatasetError(out_dir, f"output folder must be outside the photo folder {images_dir}")
    files = find_images(images_dir)
    if len(files) < 2:
        found = "one photo" if files else "no .png or .jpg photos"
        raise DatasetError(images_dir, f"{found} in the folder; SfM needs overlapping photos")
    sizes = {}
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()
                sizes[path.name] = image.size
        except Exception as e:  # PIL raises many types; all mean "unreadable"
            raise DatasetError(path, f"cannot read image ({one_line(e)})") from None
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        first = {s: n for n, s in reversed(sizes.items())}  # one photo of each size
        listed = ", ".join(f"{first[s]} is {s[0]}x{s[1]}" for s in distinct[:3])
        raise DatasetError(
            images_dir, f"photos have different sizes ({listed}); sparsefield needs one size"
        )
    return [p.name for p in files], distinct[0]


def _reconstruct(images_dir, names, size, tmp: Path, config: SfmConfig, echo) -> SfmResult:
    """Features, matches, mapping and the dataset files, all inside ``tmp``."""
    pycolmap.set_random_seed(config.seed)
    database, scratch = tmp / "database.db", tmp / "models"
    _extract(images_dir, names, size, database, config, echo)
    _match(images_dir, database, len(names), config, echo)
    models = run_colmap(
        images_dir, "mapping", pycolmap.incremental_mapping,
        database, images_dir, scratch, _mapping_options(config),
    )
    model = _largest_model(images_dir, models, names, config, echo)
    registered = sorted(model.images[i].name for i in model.reg_image_ids())
    left_out = sorted(set(names) - set(registered))
    error = model.compute_mean_reprojection_error()
    echo(
        f"registered {len(registered)} of {len(names)} images, "
        f"{model.num_points3D():,} points, mean reprojection error {error:.2f} px"
    )
    if left_out:
        echo(f"note: left out the photos that did not register: {_listed(left_out)}")
    camera_model = _write_dataset(images_dir, model, registered, tmp, config, echo)
    database.unlink()
    shutil.rmtree(scratch)
    return SfmResult(
        root=tmp,
        registered=registered,
        unregistered=left_out,
        num_points=model.num_points3D(),
        mean_reprojection_error=error,
        num_models=len(models),
        camera_model=camera_model,
    )


def _extract(images_dir, names, size, database: Path, config: SfmConfig, echo) -> None:
    """SIFT with affine shape estimation: more matches across the wide baselines between
    the few photos of a sparse capture (COLMAP's advice for sparse reconstructions)."""
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = config.camera_model
    if config.focal is not None:
        camera = pycolmap.Camera.create_from_model_name(1, config.camera_model, config.focal, *size)
        reader.camera_params = camera.params_to_string()
    extraction = extraction_options(config.max_image_size, config.num_threads)
    mode = pycolmap.CameraMode.SINGLE if config.single_camera else pycolmap.CameraMode.PER_IMAGE
    run_colmap(
        images_dir, "feature extraction", pycolmap.extract_features,
        database, images_dir, image_names=names, camera_mode=mode, reader_options=reader,
        extraction_options=extraction, device=pycolmap.Device.cpu,
    )
    counts = keypoint_counts(database)
    if len(counts) != len(names):
        raise DatasetError(images_dir, f"COLMAP read {len(counts)} of {len(names)} photos")
    echo(
        f"features: {sum(counts):,} SIFT features in {len(names)} images "
        f"({size[0]}x{size[1]}; fewest {min(counts):,}, most {max(counts):,})"
    )


def _match(images_dir, database: Path, count: int, config: SfmConfig, echo) -> None:
    """Match pairs, verify them by epipolar geometry, and stop if no pair is connected.

    Guided matching re-matches with the verified geometry, which recovers features on
    repeated textures that the ratio test drops."""
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = config.num_threads
    matching.guided_matching = True
    verification = pycolmap.TwoViewGeometryOptions()
    verification.min_num_inliers = MIN_PAIR_INLIERS
    if config.matcher == "exhaustive":
        match, pairing = pycolmap.match_exhaustive, pycolmap.ExhaustivePairingOptions()
    else:
        match, pairing = pycolmap.match_sequential, pycolmap.SequentialPairingOptions()
    run_colmap(
        images_dir, f"{config.matcher} matching", match,
        database, matching_options=matching, pairing_options=pairing,
        verification_options=verification, device=pycolmap.Device.cpu,
    )
    with pycolmap.Database.open(database) as db:
        _, geometries = db.read_two_view_geometries()
        inliers = [len(g.inlier_matches) for g in geometries]
    pairs = sum(n >= MIN_PAIR_INLIERS for n in inliers)
    echo(
        f"matches: {pairs} of {count * (count - 1) // 2} image pairs verified, "
        f"{sum(inliers):,} inlier matches"
    )
    if pairs == 0:
        raise DatasetError(
            images_dir,
            f"too few matches: no pair of the {count} photos shares {MIN_PAIR_INLIERS} verified "
            f"feature matches; {_advice(config)}",
        )


def _mapping_options(config: SfmConfig) -> pycolmap.IncrementalPipelineOptions:
    """Incremental mapping that starts from 50 inliers rather than 100 and registers a
    photo from 20 rather than 30: small photos of a sparse capture have few features."""
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = config.num_threads
    options.random_seed = config.seed
    options.mapper.init_min_num_inliers = 50
    options.mapper.abs_pose_min_num_inliers = 20
    if config.focal is not None:
        options.ba_refine_focal_length = False
        options.mapper.abs_pose_refine_focal_length = False
    return options


def _largest_model(images_dir, models: dict, names: list[str], config: SfmConfig, echo):
    """The model with the most registered photos, if it holds ``config.min_registered``."""
    count = len(names)
    if not models:
        raise DatasetError(
            images_dir,
            f"structure from motion found no starting pair of photos among {count}; "
            f"{_advice(config)}",
        )
    sizes = sorted((m.num_reg_images() for m in models.values()), reverse=True)
    model = max(models.values(), key=lambda m: m.num_reg_images())
    if sizes[0] < max(2, int(np.ceil(config.min_registered * count))):
        missing = sorted(set(names) - {model.images[i].name for i in model.reg_image_ids()})
        split = f" (largest of {len(sizes)} models)" if len(sizes) > 1 else ""
        raise DatasetError(
            images_dir,
            f"registered {sizes[0]} of {count} images{split}, fewer than "
            f"{config.min_registered:.0%} (not registered: {_listed(missing)}); {_advice(config)}",
        )
    if len(sizes) > 1:
        others = ", ".join(str(s) for s in sizes[1:])
        echo(f"note: SfM made {len(sizes)} models; kept the largest ({sizes[0]} images; {others})")
    return model


def _listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (", ..." if len(names) > most else "")


def _advice(config: SfmConfig) -> str:
    """What to try after a failure, leaving out what ``config`` already does."""
    tips = ["photos with more overlap (each part seen in 3+ photos, 10-20 degrees apart)"]
    if config.focal is None:
        tips.append("a known focal length in pixels (--focal)")
    if config.matcher != "exhaustive":
        tips.append("--matcher exhaustive")
    return "try " + ", ".join(tips[:-1]) + (" or " if len(tips) > 1 else "") + tips[-1]


def _write_dataset(images_dir, model, registered, tmp: Path, config: SfmConfig, echo) -> str:
    """Write ``tmp/images`` and ``tmp/sparse/0``; returns the camera model written.

    Distortion that shifts no pixel by more than `NEGLIGIBLE_DISTORTION_PX` is dropped
    (the camera becomes its pinhole part) and the photos are copied unchanged; larger
    distortion is resampled away by COLMAP's undistorter (unless ``config.undistort`` is
    off, when `load_colmap` will warn that it ignores it).
    """
    shift = max(distortion_shift(camera) for camera in model.cameras.values())
    if shift > NEGLIGIBLE_DISTORTION_PX and config.undistort:
        echo(f"undistorting: the fitted lens distortion moves border pixels up to {shift:.1f} px")
        _undistort(images_dir, model, registered, tmp, config)
        return "PINHOLE"
    if shift <= NEGLIGIBLE_DISTORTION_PX:
        for camera in model.cameras.values():
            _drop_distortion(camera)
    sparse = tmp / "sparse" / "0"
    sparse.mkdir(parents=True)
    model.write_binary(sparse)
    (tmp / "images").mkdir()
    for name in registered:
        shutil.copy2(images_dir / name, tmp / "images" / name)
    return next(iter(model.cameras.values())).model_name


def distortion_shift(camera: pycolmap.Camera) -> float:
    """Largest distance in pixels, over the border of the image, between a pixel and
    where a pinhole camera with the same f, c would see its ray: ``|K pi(d^-1(x)) - x|``."""
    t, ends = np.linspace(0.0, 1.0, 17), np.array([0.0, 1.0])
    edges = [np.stack(np.meshgrid(a, b), -1).reshape(-1, 2) for a, b in ((t, ends), (ends, t))]
    border = np.concatenate(edges) * [camera.width, camera.height]
    rays = camera.cam_from_img(border)
    pinhole = rays * [camera.focal_length_x, camera.focal_length_y] + [
        camera.principal_point_x, camera.principal_point_y
    ]
    return float(np.max(np.linalg.norm(pinhole - border, axis=-1)))


def _drop_distortion(camera: pycolmap.Camera) -> None:
    """Turn ``camera`` into its pinhole part in place (same f and principal point)."""
    fx, fy = camera.focal_length_x, camera.focal_length_y
    cx, cy = camera.principal_point_x, camera.principal_point_y
    if camera.model_name in ("SIMPLE_RADIAL", "RADIAL", "SIMPLE_PINHOLE"):
        camera.model, camera.params = pycolmap.CameraModelId.SIMPLE_PINHOLE, [fx, cx, cy]
    else:
        camera.model, camera.params = pycolmap.CameraModelId.PINHOLE, [fx, fy, cx, cy]


def _undistort(images_dir, model, registered, tmp: Path, config: SfmConfig) -> None:
    """COLMAP's image undistorter: pinhole photos and model.

    One shared camera: the photos are cropped to the pixels that the distorted image
    covers. One camera per photo: each would be cropped differently, and `load_colmap`
    needs one size, so the size is kept (scale 1), leaving black corners where the
    distortion was pincushion."""
    distorted, work = tmp / "distorted", tmp / "undistorted"
    distorted.mkdir()
    model.write_binary(distorted)
    options = pycolmap.UndistortCameraOptions()
    if not config.single_camera:
        options.min_scale = options.max_scale = 1.0
    run_colmap(
        images_dir, "undistortion", pycolmap.undistort_images,
        work, distorted, images_dir, image_names=registered,
        undistort_options=options, num_threads=config.num_threads,
    )
    (tmp / "sparse").mkdir()
    os.replace(work / "sparse", tmp / "sparse" / "0")
    os.replace(work / "images", tmp / "images")
    shutil.rmtree(work)
    shutil.rmtree(distorted)


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished ``tmp`` onto ``dest`` (missing or empty): atomic on one disk."""
    try:
        os.replace(tmp, dest)
    except OSError as e:
        raise DatasetError(dest, f"cannot create the output folder ({one_line(e)})") from None
