"""Tests for sparsefield.renderers.tsdf: fusion of analytic depth maps, checked against
the true surfaces (a sphere, an open-top box with an interior floater, a plane)."""

import numpy as np
import pytest

from sparsefield.cameras import elevations, image_rays, look_at, make_cameras, orbit_poses
from sparsefield.renderers import mesh as mesh_lib
from sparsefield.renderers import tsdf

BBOX = np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
RES = 64
VOXEL = 2.0 / (RES - 1)
WIDTH = 128
RADIUS = 0.6
# An open-top box ("bowl"): 0.2 thick floor and walls (thicker than the default
# truncation of 4 voxels = 0.127, so no view's negative band reaches through a wall).
BOWL = [
    ((-0.6, -0.6, -0.5), (0.6, 0.6, -0.3)),  # floor
    ((-0.6, -0.6, -0.3), (-0.4, 0.6, 0.3)), ((0.4, -0.6, -0.3), (0.6, 0.6, 0.3)),  # walls
    ((-0.4, -0.6, -0.3), (0.4, -0.4, 0.3)), ((-0.4, 0.4, -0.3), (0.4, 0.6, 0.3)),
]
CAVITY = (np.array([-0.4, -0.4, -0.3]), np.array([0.4, 0.4, 0.3]))
FLOATER = ((0.0, 0.0, 0.0), 0.1)  # a blob in the middle of the cavity


def _hit_sphere(o, d, center, radius):
    """Nearest t > 0 of unit rays with a sphere, inf on a miss."""
    oc = o - center
    b = np.sum(oc * d, -1)
    disc = b * b - (np.sum(oc * oc, -1) - radius * radius)
    t = -b - np.sqrt(np.maximum(disc, 0.0))
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _hit_box(o, d, lo, hi):
    """Entry t > 0 of rays into an axis-aligned box (slab test), inf on a miss."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0, t1 = (np.asarray(lo) - o) / d, (np.asarray(hi) - o) / d
    near, far = np.nanmax(np.minimum(t0, t1), -1), np.nanmin(np.maximum(t0, t1), -1)
    return np.where((far >= near) & (near > 0), near, np.inf)


def _render(cameras, spheres=(), boxes=(), kind="ray", only=None):
    """Analytic maps in the renderers' convention: depth [C, H, W] is t along the unit
    pixel ray (``kind="ray"``) or the view depth t (d . forward) (``"z"``), 0 on a miss;
    opacity 1 on a hit; rgb = 0.5 + 0.5 x_hit. ``only`` maps extra spheres to the one
    camera index that sees them."""
    depth, opacity, rgb = [], [], []
    for c in range(len(cameras)):
        o, d = (np.asarray(a, np.float64) for a in image_rays(cameras[c]))
        extra = [s for s, cam in (only or {}).items() if cam == c]
        t = np.full(d.shape[:-1], np.inf)
        for center, radius in list(spheres) + extra:
            t = np.minimum(t, _hit_sphere(o, d, np.asarray(center), radius))
        for lo, hi in boxes:
            t = np.minimum(t, _hit_box(o, d, lo, hi))
        hit = np.isfinite(t)
        t = np.where(hit, t, 0.0)
        forward = -np.asarray(cameras.c2w[c])[:, 2]
        depth.append(t * (d @ forward) if kind == "z" else t)
        opacity.append(hit.astype(np.float32))
        rgb.append(np.where(hit[..., None], 0.5 + 0.5 * (o + t[..., None] * d), 0.0))
    return tuple(np.asarray(x, np.float32) for x in (depth, opacity, rgb))


def _rig(extra=14):
    train = make_cameras(orbit_poses((0, 0, 0), 3.0, 45.0, 6), 0.8, WIDTH, WIDTH)
    return tsdf.fusion_cameras(train, BBOX, extra, band=(-90.0, 90.0))  # the whole sphere


def _box_sdf(x, lo, hi):
    center, half = (np.asarray(hi) + np.asarray(lo)) / 2, (np.asarray(hi) - np.asarray(lo)) / 2
    q = np.abs(x - center) - half
    return np.linalg.norm(np.maximum(q, 0), axis=-1) + np.minimum(q.max(-1), 0)


def _bowl_sdf(x):
    return np.min([_box_sdf(x, lo, hi) for lo, hi in BOWL], axis=0)


def _bowl_surface(n, seed=0):
    """Points on the bowl's surface: points on the boxes' faces whose outside (a step
    along the face's normal) is outside every box, which drops the faces shared inside."""
    rng = np.random.default_rng(seed)
    pts = []
    for lo, hi in BOWL:
        p = rng.uniform(lo, hi, (n, 3))
        axis, side = rng.integers(0, 3, n), rng.integers(0, 2, n)
        p[np.arange(n), axis] = np.where(side, np.asarray(hi)[axis], np.asarray(lo)[axis])
        step = np.zeros_like(p)
        step[np.arange(n), axis] = np.where(side, 1e-6, -1e-6)
        pts.append(p[_bowl_sdf(p + step) > 0])
    return np.concatenate(pts)


@pytest.fixture(scope="module")
def sphere_mesh():
    cams = _rig()
    volume = tsdf.fuse(*_render(cams, spheres=[(np.zeros(3), RADIUS)]), cams, BBOX, resolution=RES)
    return tsdf.extract(volume)


@pytest.fixture(scope="module")
def bowl_volumes():
    """The bowl with the floater seen by one camera only (the highest), and by all."""
    cams = _rig()
    top = int(np.argmax(np.asarray(cams.c2w)[:, 2, 3]))
    once = tsdf.fuse(*_render(cams, boxes=BOWL, only={FLOATER: top}), cams, BBOX, resolution=RES)
    always = tsdf.fuse(*_render(cams, boxes=BOWL, spheres=[FLOATER]), cams, BBOX, resolution=RES)
    return once, always


def test_sphere_vertices_on_surface(sphere_mesh):
    err = np.linalg.norm(sphere_mesh.vertices, axis=1) - RADIUS
    assert np.abs(err).mean() < 0.25 * VOXEL
    assert np.abs(err).max() < VOXEL
    truth = np.random.default_rng(0).normal(size=(20000, 3))
    truth = RADIUS * truth / np.linalg.norm(truth, axis=1, keepdims=True)
    chamfer = mesh_lib.chamfer_distance(mesh_lib.sample_points(sphere_mesh, 20000), truth)
    assert chamfer < 0.4 * VOXEL  # includes the chords of flat triangles on a curved surface
    assert sphere_mesh.is_watertight  # seen from all around: closed


def test_sphere_normals_outward_and_colors(sphere_mesh):
    unit = sphere_mesh.vertices / np.linalg.norm(sphere_mesh.vertices, axis=1, keepdims=True)
    cos = np.sum(sphere_mesh.vertex_normals * unit, axis=1)
    # Vertices sit ~0.1 voxel off the surface, which tilts marching cubes' smallest
    # triangles; so a few normals lean, none inwards.
    assert cos.min() > 0.5 and np.mean(cos > 0.9) > 0.98
    assert sphere_mesh.volume > 0
    rgb = sphere_mesh.visual.vertex_colors[:, :3] / 255.0
    np.testing.assert_allclose(rgb, 0.5 + 0.5 * sphere_mesh.vertices, atol=0.02)


def test_bowl_surface_and_empty_cavity(bowl_volumes):
    mesh = tsdf.extract(bowl_volumes[0])
    v = mesh.vertices
    assert np.abs(_bowl_sdf(v)).mean() < 0.5 * VOXEL
    chamfer = mesh_lib.chamfer_distance(mesh_lib.sample_points(mesh, 20000), _bowl_surface(8000))
    assert chamfer < 0.5 * VOXEL
    # Nothing inside the cavity (more than 1.5 voxels from its walls), no lid over it ...
    lo, hi = CAVITY[0] + 1.5 * VOXEL, CAVITY[1] + np.array([-1.5, -1.5, 3.0]) * VOXEL
    assert not np.all((v > lo) & (v < hi), axis=1).any()
    # ... and its floor and inner walls are there.
    floor = (np.abs(v[:, 2] - CAVITY[0][2]) < VOXEL) & np.all(np.abs(v[:, :2]) < 0.3, axis=1)
    wall = (np.abs(v[:, 0] - CAVITY[1][0]) < VOXEL) & (np.abs(v[:, 1]) < 0.3) & (np.abs(v[:, 2]) < 0.2)
    assert floor.sum() > 100 and wall.sum() > 50


def test_floater_seen_through_is_carved(bowl_volumes):
    once, always = (tsdf.extract(v, clean=False) for v in bowl_volumes)
    center, radius = FLOATER
    near = lambda m: np.linalg.norm(m.vertices - center, axis=1) < radius + VOXEL  # noqa: E731
    assert near(always).sum() > 20  # seen by every view, the blob is a surface ...
    assert near(once).sum() == 0  # ... seen by one, the others see through it: carved
    idx = tuple(np.round((center - bowl_volumes[0].bbox[0]) / VOXEL).astype(int))
    assert bowl_volumes[0].tsdf[idx] > 0 > bowl_volumes[1].tsdf[idx]


def test_unobserved_space_makes_no_surface():
    eyes = [3.0 * np.array([np.cos(a), np.sin(a), 0.3]) for a in (-0.4, 0.0, 0.4)]  # all on the +x side
    poses = np.stack([look_at(eye, (0, 0, 0)) for eye in eyes])
    cams = make_cameras(poses, 0.8, WIDTH, WIDTH)
    volume = tsdf.fuse(*_render(cams, spheres=[(np.zeros(3), RADIUS)]), cams, BBOX, resolution=RES)
    mesh = tsdf.extract(volume, clean=False)
    assert np.abs(np.linalg.norm(mesh.vertices, axis=1) - RADIUS).max() < VOXEL  # no border walls
    assert mesh.vertices[:, 0].min() > -0.3 and not mesh.is_watertight  # the far side stays open
    for point in ([-0.3, 0.0, 0.0], [-RADIUS, 0.0, 0.0]):  # deeper than the band: unseen
        assert volume.weight[tuple(np.round((np.array(point) + 1.0) / VOXEL).astype(int))] == 0


def test_a_surface_no_view_saw_from_the_front_is_not_meshed():
    """A plate seen only from above (3-50 degrees up): grazing rays pass beneath its
    edges, so carving alone closes an underside below it; no view saw that underside
    from the front, and it is dropped, while the top and the sides stay whole."""
    poses = np.concatenate([orbit_poses((0, 0, 0), 3.0, e, 6) for e in (3.0, 20.0, 50.0)])
    cams = tsdf.fusion_cameras(make_cameras(poses, 0.8, WIDTH, WIDTH), BBOX, 14)
    plate = ((-0.6, -0.6, -0.5), (0.6, 0.6, -0.44))
    volume = tsdf.fuse(*_render(cams, boxes=[plate]), cams, BBOX, resolution=RES)

    def areas(mesh):
        n, a = mesh.face_normals[:, 2], mesh.area_faces
        return a[n < -0.9].sum(), a[n > 0.9].sum(), a[np.abs(n) < 0.3].sum()

    down, up, side = areas(tsdf.extract(volume, seen_fronts=False))
    assert down > 0.25  # carving made an underside (the true one has area 1.44)
    down_seen, up_seen, side_seen = areas(tsdf.extract(volume))
    assert down_seen < 0.05 * down
    assert up_seen == pytest.approx(up) and side_seen == pytest.approx(side)
    assert up_seen == pytest.approx(1.2 * 1.2, rel=0.05)


def test_only_the_front_views_mark_what_was_seen():
    """``front_views``: the six training cameras circle 45 degrees above the sphere and
    the added views go all round it. Counting only the training cameras' fronts, the
    cap below that no training camera sees is dropped. Every view still carves, so the
    rest of the sphere is as before."""
    cams = _rig()
    maps = _render(cams, spheres=[(np.zeros(3), RADIUS)])
    photos = np.arange(len(cams)) < 6
    every = tsdf.extract(tsdf.fuse(*maps, cams, BBOX, resolution=RES))
    seen = tsdf.extract(tsdf.fuse(*maps, cams, BBOX, resolution=RES, front_views=photos))
    assert every.is_watertight and every.vertices[:, 2].min() < -0.95 * RADIUS
    assert not seen.is_watertight and seen.vertices[:, 2].min() > -0.9 * RADIUS
    assert seen.vertices[:, 2].max() > 0.95 * RADIUS  # the top, which they all see
    # cameras 45 degrees up at 5 radii see the sphere down to about 33 degrees below its equator
    assert seen.area > 0.6 * every.area


def test_plane_values_match_formula():
    """One camera above a half-plane z = 0 (x < 0 only): the stored distance is the
    signed distance along each voxel's ray, truncated; free space where the plane is
    missing; nothing behind the band or outside the image."""
    cam = make_cameras(look_at((0, 0, 2.0), (0, 0, 0), up=(0, 1, 0))[None], 1.2, WIDTH, WIDTH)
    slab = [((-5.0, -5.0, -5.0), (0.0, 5.0, 0.0))]
    volume = tsdf.fuse(*_render(cam, boxes=slab), cam, BBOX, resolution=RES)
    mu = volume.truncation
    assert mu == pytest.approx(tsdf.DEFAULT_TRUNCATION_VOXELS * VOXEL)
    g = BBOX[0, 0] + VOXEL * np.arange(RES)
    x, y, z = np.meshgrid(g, g, g, indexing="ij")
    to_cam = np.stack([x, y, z - 2.0], -1)
    cos = -to_cam[..., 2] / np.linalg.norm(to_cam, axis=-1)  # ray angle to the plane normal
    along = z / cos  # distance to the plane along the voxel's ray, positive above it
    half = np.tan(0.6)  # tan of half the field of view
    inside = (np.abs(x / (2.0 - z)) < 0.95 * half) & (np.abs(y / (2.0 - z)) < 0.95 * half)
    under = inside & (x < -2 * VOXEL)
    # Nearest-pixel lookup: the pixel's ray is up to half a pixel off the voxel's, so its
    # hit distance 2 / cos differs by up to 2 sin / cos^2 * (half a pixel) ~ 0.25 voxel
    # at the image's edge, and ~0 near its centre; the band's edge is that fuzzy too.
    band = under & (along >= -mu + 0.3 * VOXEL)
    np.testing.assert_allclose(volume.tsdf[band], np.minimum(along[band], mu), atol=0.3 * VOXEL)
    centre = band & (cos > 0.999)
    np.testing.assert_allclose(volume.tsdf[centre], np.minimum(along[centre], mu), atol=0.05 * VOXEL)
    assert (volume.weight[band] == 1).all()
    assert (volume.weight[under & (along < -mu - 0.3 * VOXEL)] == 0).all()  # occluded
    free = inside & (x > 2 * VOXEL)
    assert (volume.weight[free] == 1).all() and (volume.tsdf[free] == pytest.approx(mu))
    assert (volume.weight[np.abs(x / (2.0 - z)) > 1.05 * half] == 0).all()  # outside the image
    # Near-surface colour is the pixel's: 0.5 + 0.5 * (hit point on z = 0).
    near = band & (np.abs(along) < 0.5 * mu)
    np.testing.assert_allclose(volume.color[near][:, 2], 0.5, atol=1 / 255)
    # The Gaussian rasterizer's view depth z_s: the hit is z_s r / z_x along the voxel's own
    # ray; a plane facing the camera has one z_s in every pixel, so this is exact.
    z_volume = tsdf.fuse(*_render(cam, boxes=slab, kind="z"), cam, BBOX, resolution=RES, depth_kind="z")
    np.testing.assert_allclose(z_volume.tsdf[band], np.minimum(along[band], mu), atol=1e-3 * VOXEL)
    np.testing.assert_array_equal(z_volume.weight[band | free], 1)


def test_no_surface_raises():
    cams = _rig(extra=2)
    volume = tsdf.fuse(*_render(cams), cams, BBOX, resolution=RES)
    assert (volume.tsdf[volume.weight > 0] > 0).all()
    with pytest.raises(ValueError, match="No surface"):
        tsdf.extract(volume)


def test_fusion_cameras_surround_the_box():
    train = make_cameras(orbit_poses((0, 0, 0), 3.0, 30.0, 4), 0.8, 32, 24)
    bbox = BBOX + np.array([0.5, 0.0, 0.2])
    cams = tsdf.fusion_cameras(train, bbox, 40, band=(-90.0, 90.0))
    assert len(cams) == 44 and (cams.width, cams.height) == (32, 24)
    np.testing.assert_array_equal(cams.c2w[:4], train.c2w)
    np.testing.assert_allclose(cams.fx, train.fx[0])
    np.testing.assert_allclose(cams.cy, train.cy[0])
    center = bbox.mean(0)
    radius = np.linalg.norm(train.c2w[:, :, 3] - center, axis=1).mean()
    offsets = cams.c2w[4:, :, 3] - center
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), radius, rtol=1e-5)
    unit = offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    np.testing.assert_allclose(-cams.c2w[4:, :, 2], -unit, atol=1e-5)  # looking at the centre
    assert np.linalg.norm(unit.mean(0)) < 0.05  # balanced all around
    cos = unit @ unit.T - 2 * np.eye(40)
    spacing = np.degrees(np.arccos(cos.max(1)))  # angle to the nearest neighbour
    assert spacing.min() > 0.6 * spacing.max()  # evenly spread, none clustered


def test_fusion_cameras_keep_to_the_training_band():
    """By default the added views stay within the elevations the training cameras span
    (none from below a capture made from above), spread over the whole azimuth."""
    low = orbit_poses((0, 0, 0), 3.0, 20.0, 3)
    high = orbit_poses((0, 0, 0), 3.0, 60.0, 3)
    train = make_cameras(np.concatenate([low, high]), 0.8, 32, 24)
    cams = tsdf.fusion_cameras(train, BBOX, 30)
    offsets = cams.c2w[6:, :, 3] - BBOX.mean(0)
    elevation = elevations(offsets, (0, 0, 1))
    assert elevation.min() >= 20.0 - 1e-3 and elevation.max() <= 60.0 + 1e-3
    assert elevation.max() - elevation.min() > 30.0  # the band is filled, not one ring
    azimuth = np.degrees(np.arctan2(offsets[:, 1], offsets[:, 0]))
    assert np.histogram(azimuth, bins=6, range=(-180, 180))[0].min() >= 3
    # Another up: the band is measured about it, so the added views keep to the range
    # of the training cameras' elevations above the plane normal to that up.
    up = np.array([0.0, 1.0, 0.0])
    trained = elevations(train.c2w[:, :, 3] - BBOX.mean(0), up)
    tilted = tsdf.fusion_cameras(train, BBOX, 30, up=up)
    added = elevations(tilted.c2w[6:, :, 3] - BBOX.mean(0), up)
    assert added.min() >= trained.min() - 1e-3 and added.max() <= trained.max() + 1e-3
    assert added.max() - added.min() > 0.5 * (trained.max() - trained.min())


def test_one_side_arc_holds_the_angles_only_when_they_lie_within_a_half_circle():
    start, width = tsdf.one_side_arc(np.radians([350.0, 10.0, 25.0]))  # across 0
    assert np.degrees(start) == pytest.approx(350.0) and np.degrees(width) == pytest.approx(35.0)
    assert tsdf.one_side_arc(np.radians([0.0, 120.0, 240.0])) is None  # they go round
    assert tsdf.one_side_arc(np.radians([30.0])) is None


def test_fusion_cameras_of_a_forward_facing_capture_keep_to_its_side():
    """Training cameras all on one side of the box (azimuths -30 to 40 degrees): the
    added views spread over that arc, none round the back that no photo shows."""
    eyes = [(3.0 * np.cos(a), 3.0 * np.sin(a), 1.0) for a in np.radians([-30.0, -5.0, 15.0, 40.0])]
    train = make_cameras(np.stack([look_at(eye, (0, 0, 0)) for eye in eyes]), 0.8, 32, 24)
    cams = tsdf.fusion_cameras(train, BBOX, 20)
    offsets = cams.c2w[4:, :, 3] - BBOX.mean(0)
    azimuth = np.degrees(np.arctan2(offsets[:, 1], offsets[:, 0]))
    assert azimuth.min() >= -30.0 - 1e-3 and azimuth.max() <= 40.0 + 1e-3
    assert np.histogram(azimuth, bins=5, range=(-30, 40))[0].min() >= 2  # spread over the arc
