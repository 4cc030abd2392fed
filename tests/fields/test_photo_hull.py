"""The photo hull: space carving of a textured floor seen by three cameras from above
removes the air above it, keeps the floor, and carves nothing where the views cannot
tell depth apart (a uniform colour)."""

import numpy as np
import pytest

from sparsefield.cameras import look_at, make_cameras
from sparsefield.fields.photo_hull import photo_hull

BBOX = np.array([[-1.0, -1.0, -0.5], [1.0, 1.0, 0.5]])
RES = 32


def texture(x, y):
    return 0.5 + 0.4 * np.stack([np.sin(15 * x), np.cos(13 * y), np.sin(11 * (x + y))], -1)


def floor_views(tex, size=96):
    """Three cameras above the plane z = 0 coloured by ``tex``, and their images of it."""
    eyes = [(2.2, 0.0, 2.0), (-1.1, 1.9, 2.0), (-1.1, -1.9, 2.0)]
    cams = make_cameras(np.stack([look_at(e, (0.0, 0.0, 0.0)) for e in eyes]), np.radians(50), size, size)
    v, u = np.mgrid[:size, :size] + 0.5
    images = []
    for k in range(len(eyes)):
        c2w = np.asarray(cams.c2w[k], np.float64)
        local = np.stack([(u - float(cams.cx[k])) / float(cams.fx[k]), -(v - float(cams.cy[k])) / float(cams.fy[k]),
                          -np.ones_like(u)], -1)
        d = local @ c2w[:3, :3].T
        t = -c2w[2, 3] / d[..., 2]
        hit = c2w[:3, 3] + t[..., None] * d
        on = t > 0
        images.append(np.where(on[..., None], tex(hit[..., 0], hit[..., 1]), 1.0))
    return cams, np.stack(images).astype(np.float32)


def z_layers(hull):
    return BBOX[0, 2] + (np.arange(RES) + 0.5) * hull.cell[2]


def inner_seed_height(hull):
    """Median height of the seeds over the middle of the floor, which every camera sees."""
    points, _ = hull.sample(0, 4000)
    inner = np.all(np.abs(points[:, :2]) < 0.6, axis=-1)
    return float(np.median(np.abs(points[inner, 2])))


def test_carving_removes_the_air_above_a_textured_floor_and_keeps_the_floor():
    cams, images = floor_views(texture)
    hull = photo_hull(cams, images, None, BBOX, resolution=RES, tolerance=0.1, min_views=3)
    z = z_layers(hull)
    centre = slice(RES // 5, RES - RES // 5)  # |x|, |y| < 0.6: every camera sees it
    air = hull.occupied[centre, centre][:, :, z > 0.25]
    floor = hull.occupied[centre, centre][:, :, np.abs(z) < hull.cell[2]]
    assert hull.carved > 0
    assert air.mean() < 0.1, f"{air.mean():.2f} of the air above the floor is left"
    assert floor.mean() == 1.0, f"only {floor.mean():.2f} of the floor is left"
    # the seeds come down from the top of the box (the uniform case below) to the floor
    assert inner_seed_height(hull) < 0.2
    points, colors = hull.sample(0, 4000)
    near = np.all(np.abs(points[:, :2]) < 0.6, axis=-1) & (np.abs(points[:, 2]) < 2 * hull.cell[2])
    error = np.sqrt(np.mean((colors[near] - texture(points[near, 0], points[near, 1])) ** 2))
    assert near.sum() > 50 and error < 0.2
    assert hull.contains(np.array([[0.0, 0.0, 0.0]]), dilate=0).all()
    assert not hull.contains(np.array([[0.0, 0.0, 0.45], [3.0, 0.0, 0.0]]), dilate=0).any()


def test_a_uniform_colour_gives_no_evidence_so_nothing_is_carved():
    cams, images = floor_views(lambda x, y: np.full(x.shape + (3,), 0.5))
    hull = photo_hull(cams, images, None, BBOX, resolution=RES, tolerance=0.1, min_views=3)
    assert hull.carved == 0
    assert hull.occupied[RES // 2, RES // 2].all()
    assert inner_seed_height(hull) > 0.4  # on the top of the box, what the cameras see


def test_masks_bound_the_hull_and_an_empty_one_is_an_error():
    cams, images = floor_views(texture)
    masks = np.zeros(images.shape[:3], np.float32)
    hull = photo_hull(cams, images, masks, BBOX, resolution=RES, min_views=3)
    assert not hull.occupied.any()
    with pytest.raises(ValueError, match="photo hull has no surface voxel"):
        hull.sample(0, 10)


def test_inner_seeds_fill_the_carved_volume_with_the_colour_of_the_nearest_surface():
    cams, images = floor_views(texture)
    hull = photo_hull(cams, images, None, BBOX, resolution=RES, tolerance=0.1, min_views=3)
    points, colors = hull.sample(0, 4000, surface=False)
    assert hull.contains(points, dilate=0).all()
    below = points[:, 2] < -0.2  # under the floor: never seen, yet occupied
    assert below.mean() > 0.3
    # each seed has the colour of the surface voxel nearest its voxel, in world units
    # (the cells are twice as wide as tall here), up to ties
    shell = np.argwhere(hull.surface)
    voxel = np.floor((points - BBOX[0]) / hull.cell)
    nearest = shell[np.argmin((((voxel[:, None] - shell[None]) * hull.cell) ** 2).sum(-1), 1)]
    expected = hull.colors[nearest[:, 0], nearest[:, 1], nearest[:, 2]]
    assert np.all(np.isclose(colors, expected), axis=-1).mean() > 0.9
