"""Sparse-view selection: which frames of a split a few-shot run trains on.

Pure functions of camera centres; they return positions within the split (0..N-1) so
the caller maps them to `SceneData` indices and logs them with the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scene import DatasetError

BLENDER_8_VIEWS = (26, 86, 2, 55, 75, 93, 16, 73)
"""The 8 training-view ids of the 100-frame NeRF-synthetic train split used by DietNeRF
and FreeNeRF (and most few-shot Blender papers since)."""


def select_views(
    centers: np.ndarray,
    n: int | None = None,
    ids: Sequence[int] | None = None,
    source: str = "train split",
) -> np.ndarray:
    """Choose training views within one split.

    Precedence: explicit ``ids``; else all frames when ``n`` is None; else the standard
    `BLENDER_8_VIEWS` when the split has 100 frames and ``n == 8``; else farthest-point
    sampling of the camera centres from frame 0 (`fps_views`).

    Args:
        centers: ``[N, 3]`` camera centres of the split.
        n: number of views, 1..N, or None for all.
        ids: explicit positions within the split; each must exist and be distinct.
        source: what the split is, named in error messages (e.g. a JSON path).

    Returns:
        ``[n]`` int64 positions in 0..N-1, in selection order.

    Raises:
        DatasetError: an id that does not exist or repeats, or ``n`` outside 1..N.
    """
    num = len(centers)
    if ids is not None:
        return _check_ids(ids, num, n, source)
    if n is None:
        return np.arange(num, dtype=np.int64)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= num:
        raise DatasetError(source, f"cannot select {n!r} views (the split has {num} frames)")
    if num == 100 and n == 8:
        return np.asarray(BLENDER_8_VIEWS, np.int64)
    return fps_views(centers, n)


def fps_views(centers: np.ndarray, n: int, start: int = 0) -> np.ndarray:
    """Farthest-point sampling of camera centres, deterministic.

    ``i_0 = start``; ``i_{k+1} = argmax_i min_{j <= k} ||c_i - c_{i_j}||``, ties broken by
    the lowest index, and already-chosen frames never chosen again (so coincident
    cameras still give ``n`` distinct ids).

    Args:
        centers: ``[N, 3]`` camera centres.
        n: number of views, 1..N.
        start: the first view.

    Returns:
        ``[n]`` int64 distinct positions in 0..N-1, starting with ``start``.
    """
    centers = np.asarray(centers, np.float64)
    if not 1 <= n <= len(centers):
        raise ValueError(f"n must be in 1..{len(centers)}, got {n}")
    chosen = [int(start)]
    dist = np.linalg.norm(centers - centers[start], axis=-1)
    dist[start] = -np.inf
    for _ in range(n - 1):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(centers - centers[nxt], axis=-1))
        dist[chosen] = -np.inf
    return np.asarray(chosen, np.int64)


def _check_ids(ids, num: int, n: int | None, source: str) -> np.ndarray:
    ids = list(ids)
    if n is not None and n != len(ids):
        raise DatasetError(source, f"n={n} but {len(ids)} view ids were given")
    seen = set()
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < num:
            raise DatasetError(source, f"view id {i} does not exist (the split has {num} frames)")
        if i in seen:
            raise DatasetError(source, f"view id {i} is listed twice")
        seen.add(int(i))
    return np.asarray(ids, np.int64)
