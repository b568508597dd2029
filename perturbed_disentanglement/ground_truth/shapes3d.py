"""Shapes3D ground truth: a procedural numpy re-rendering, or the official ``3dshapes.h5``.

The official images were rendered with MuJoCo; neither MuJoCo nor OpenGL is needed here. The
procedural renderer ray-casts the scene analytically (floor, four low walls, sky, and a cube,
cylinder, sphere or capsule standing on the floor) with supersampling for smooth edges, a fixed
spot light that casts the object's shadow, and a camera headlight.

Why it is fast: the geometry depends only on (scale, shape, orientation), so each of the 480 views
is rendered once into per-pixel weights of the floor, wall and object colours plus a constant term
(sky, specular highlight). Every hue triple is then a linear combination of the three HSV(h, 1, 1)
colours, rounded and clipped to uint8. Pixels that see only one surface are precomputed as uint8
layers per hue, so the full grid is mostly uint8 additions; only mixed edge pixels are combined in
float, with the same formula ``images(indices)`` uses, so both paths give identical bytes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import DataFormatError, InvalidArgumentError
from .grid import Factor, GroundTruth
from .official_files import existing_file, verify_sha256

# --- factors (official order; orientation varies fastest) ------------------------------------
HUES = np.linspace(0.0, 0.9, 10)
SCALES = np.linspace(0.75, 1.25, 8)
SHAPES = ("cube", "cylinder", "sphere", "capsule")
ORIENTATIONS = np.linspace(-30.0, 30.0, 15)

FACTORS: tuple[Factor, ...] = (
    Factor("floor_hue", HUES),
    Factor("wall_hue", HUES),
    Factor("object_hue", HUES),
    Factor("scale", SCALES),
    Factor("shape", np.arange(4, dtype=np.float64), categories=SHAPES),
    Factor("orientation", ORIENTATIONS),
)
FACTOR_SIZES = tuple(f.size for f in FACTORS)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 480,000
NUM_VIEWS = SCALES.size * len(SHAPES) * ORIENTATIONS.size  # 480 geometries
IMAGE_SHAPE = (64, 64, 3)

OFFICIAL_SHA256 = "0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785"
OFFICIAL_SIZE_BYTES = 267_573_662


def hsv_rgb(hue: np.ndarray | float) -> np.ndarray:
    """RGB in [0, 1] of HSV(hue, 1, 1), ``[..., 3]``: the official colour of every surface."""
    h = np.asarray(hue, dtype=np.float64)
    k = (np.array([5.0, 3.0, 1.0]) + 6.0 * h[..., None]) % 6.0
    return 1.0 - np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


# --- scene description -----------------------------------------------------------------------
@dataclass(frozen=True)
class SceneParams:
    """Camera, room, object and light of the re-rendering (world units; z is up).

    The object stands at the origin; the camera orbits it at ``camera_distance`` and
    ``camera_height``, its azimuth being the orientation factor. Values were fitted to the 50 real
    images in ``calibration/shapes3d`` (sky colour, wall and floor rows and levels numerically,
    the rest by eye).
    """

    image_size: int = 64
    supersample: int = 4
    fov_deg: float = 50.0
    camera_distance: float = 0.6
    camera_height: float = 0.152
    camera_pitch_deg: float = -2.0  # negative looks up
    back_wall: float = 1.0  # y of the back wall
    front_wall: float = -1.0
    side_wall: float = 0.936  # |x| of the side walls
    wall_height: float = 0.6
    object_size: float = 0.1  # half-extent at scale 1
    cube_half: float = 0.8  # cube half-side / object_size
    capsule_radius: float = 0.8  # capsule radius / object_size
    capsule_height: float = 3.3  # capsule total height / object_size
    light_pos: tuple[float, float, float] = (-0.6, 0.7, 2.8)
    light_target: tuple[float, float, float] = (-0.7, 0.6, 0.0)
    light_cutoff_deg: float = 40.0
    light_exponent: float = 12.0
    light_diffuse: float = 1.15
    headlight: float = 0.85
    ambient: float = 0.2
    specular: float = 0.15
    shininess: float = 20.0
    sky_rgb: tuple[float, float, float] = (153.0, 226.0, 249.0)
    wall_texture: float = 0.025  # relative amplitude of the faint wall texture


DEFAULT_SCENE = SceneParams()


@dataclass(frozen=True)
class View:
    """Per-pixel weights of one geometry: ``pixel = f*rgb(floor) + w*rgb(wall) + o*rgb(obj) + c``.

    ``floor``, ``wall``, ``obj`` are float32 ``[H*W]`` (0..255 scale), ``const`` float32
    ``[H*W, 3]``.
    """

    floor: np.ndarray
    wall: np.ndarray
    obj: np.ndarray
    const: np.ndarray


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def camera_rays(azimuth_deg: float, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """Camera origin ``[3]`` and unit ray directions ``[H*W*S*S, 3]`` (pixel-major samples)."""
    az = np.deg2rad(azimuth_deg)
    origin = np.array(
        [p.camera_distance * np.sin(az), -p.camera_distance * np.cos(az), p.camera_height]
    )
    pitch = np.deg2rad(p.camera_pitch_deg)
    flat = np.array([-np.sin(az), np.cos(az), 0.0])
    forward = np.cos(pitch) * flat + np.array([0.0, 0.0, -np.sin(pitch)])
    right = np.array([np.cos(az), np.sin(az), 0.0])
    up = np.cross(right, forward)
    n, s = p.image_size, p.supersample
    sub = (np.arange(s) + 0.5) / s
    coords = (np.arange(n)[:, None] + sub[None, :]).reshape(-1)  # n*s sample positions
    half = np.tan(np.deg2rad(p.fov_deg) / 2.0)
    xs = (coords / n * 2.0 - 1.0) * half
    ys = (1.0 - coords / n * 2.0) * half
    # axes (row, col, sub-row, sub-col): the S*S samples of a pixel are consecutive
    yy = ys.reshape(n, 1, s, 1, 1)
    xx = xs.reshape(1, n, 1, s, 1)
    d = forward + xx * right + yy * up
    d = np.broadcast_to(d, (n, n, s, s, 3)).reshape(-1, 3)
    return origin, _normalize(d)


# --- analytic intersections ------------------------------------------------------------------
# Each takes ray origins ``o`` ([3] or [N, 3]) and unit directions ``d`` ([N, 3]) and returns the
# nearest positive hit distance ``t`` ([N], inf on a miss) and the outward unit normal ([N, 3]).
Hit = tuple[np.ndarray, np.ndarray]


def _sphere(o: np.ndarray, d: np.ndarray, centre_z: float, r: float) -> Hit:
    oc = o - np.array([0.0, 0.0, centre_z])
    b = (d * oc).sum(axis=-1)
    disc = b * b - ((oc * oc).sum(axis=-1) - r * r)
    t = np.where(disc >= 0, -b - np.sqrt(np.maximum(disc, 0.0)), np.inf)
    t = np.where(t > 1e-9, t, np.inf)
    pts = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    nrm = (pts - np.array([0.0, 0.0, centre_z])) / r
    return t, nrm


def _vertical_cylinder(o: np.ndarray, d: np.ndarray, r: float, z0: float, z1: float) -> Hit:
    """Outside of the tube x²+y²=r², z0 <= z <= z1 (no caps)."""
    o = np.broadcast_to(o, d.shape)
    a = d[:, 0] ** 2 + d[:, 1] ** 2
    b = d[:, 0] * o[:, 0] + d[:, 1] * o[:, 1]
    disc = b * b - a * (o[:, 0] ** 2 + o[:, 1] ** 2 - r * r)
    ok = (disc >= 0) & (a > 1e-12)
    t = np.where(ok, (-b - np.sqrt(np.maximum(disc, 0.0))) / np.where(ok, a, 1.0), np.inf)
    z = o[:, 2] + t * d[:, 2]
    t = np.where((t > 1e-9) & (z >= z0) & (z <= z1), t, np.inf)
    fin = np.isfinite(t)
    px = np.where(fin, o[:, 0] + t * d[:, 0], r)
    py = np.where(fin, o[:, 1] + t * d[:, 1], 0.0)
    return t, np.stack([px / r, py / r, np.zeros_like(px)], axis=1)


def _top_disc(o: np.ndarray, d: np.ndarray, r: float, z: float) -> Hit:
    o = np.broadcast_to(o, d.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (z - o[:, 2]) / d[:, 2]
        px = o[:, 0] + t * d[:, 0]
        py = o[:, 1] + t * d[:, 1]
        t = np.where((t > 1e-9) & (px * px + py * py <= r * r), t, np.inf)
    return t, np.broadcast_to(np.array([0.0, 0.0, 1.0]), d.shape)


def _cube(o: np.ndarray, d: np.ndarray, half: float) -> Hit:
    """Axis-aligned cube of half-size ``half`` standing on z=0 around the z axis (slab test)."""
    lo = np.array([-half, -half, 0.0])
    hi = np.array([half, half, 2.0 * half])
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / d
        t1 = (lo - o) * inv
        t2 = (hi - o) * inv
        tmin = np.nan_to_num(np.minimum(t1, t2), nan=-np.inf)
        tmax = np.nan_to_num(np.maximum(t1, t2), nan=np.inf)
    tn = tmin.max(axis=1)
    tf = tmax.min(axis=1)
    axis = tmin.argmax(axis=1)
    t = np.where((tn <= tf) & (tn > 1e-9), tn, np.inf)
    rows = np.arange(len(d))
    nrm = np.zeros_like(d)
    nrm[rows, axis] = -np.sign(d[rows, axis])
    return t, nrm


def _nearest(*hits: Hit) -> Hit:
    ts = np.stack([h[0] for h in hits])
    k = ts.argmin(axis=0)
    rows = np.arange(ts.shape[1])
    normals = np.stack([np.broadcast_to(h[1], (ts.shape[1], 3)) for h in hits])
    return ts[k, rows], normals[k, rows]


def object_hit(o: np.ndarray, d: np.ndarray, shape: int, scale: float, p: SceneParams) -> Hit:
    """First hit of rays ``o + t d`` with the object (``shape`` index, ``scale`` factor value).

    Sizes at scale 1, in units of ``p.object_size`` (a): cube side 2·``cube_half``·a; cylinder radius a and
    height 2a; sphere radius a; capsule radius ``capsule_radius``·a and height ``capsule_height``·a.
    """
    a = p.object_size * scale
    if shape == 0:
        return _cube(o, d, p.cube_half * a)
    if shape == 1:
        return _nearest(_vertical_cylinder(o, d, a, 0.0, 2 * a), _top_disc(o, d, a, 2 * a))
    if shape == 2:
        return _sphere(o, d, a, a)
    if shape == 3:
        r = p.capsule_radius * a
        z0, z1 = r, p.capsule_height * a - r
        return _nearest(
            _vertical_cylinder(o, d, r, z0, z1), _sphere(o, d, z0, r), _sphere(o, d, z1, r)
        )
    raise InvalidArgumentError(f"shape index must be 0..3 ({', '.join(SHAPES)}), got {shape}")


def _room_hit(o: np.ndarray, d: np.ndarray, p: SceneParams) -> tuple[np.ndarray, np.ndarray]:
    """First hit with the floor (0) or a wall (1): returns t and the surface id (-1: sky)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t_floor = np.where(d[:, 2] < 0, -o[2] / d[:, 2], np.inf)
        walls = []
        for axis, pos in ((1, p.back_wall), (1, p.front_wall), (0, p.side_wall), (0, -p.side_wall)):
            t = (pos - o[axis]) / d[:, axis]
            z = o[2] + t * d[:, 2]
            walls.append(np.where((t > 1e-9) & (z >= 0) & (z <= p.wall_height), t, np.inf))
    t_wall = np.min(np.stack(walls), axis=0)
    t = np.minimum(t_floor, t_wall)
    surf = np.where(np.isfinite(t), np.where(t_floor <= t_wall, 0, 1), -1)
    return t, surf


def _wall_texture(pts: np.ndarray, amplitude: float) -> np.ndarray:
    """A faint deterministic texture (multiplicative, mean 1) in wall coordinates."""
    if amplitude == 0:
        return np.ones(len(pts))
    u = pts[:, 0] + pts[:, 1]
    v = pts[:, 2]
    g = np.sin(41.0 * u + 3.0 * np.sin(29.0 * v)) * np.sin(37.0 * v - 2.0 * np.sin(23.0 * u))
    return 1.0 + amplitude * g


def object_bound(shape: int, scale: float, p: SceneParams) -> tuple[float, float]:
    """Centre height and radius of a sphere enclosing the object (for culling rays)."""
    a = p.object_size * scale
    if shape == 0:
        h = p.cube_half * a
        return h, h * np.sqrt(3.0)
    if shape == 1:
        return a, a * np.sqrt(2.0)
    if shape == 2:
        return a, a
    half = p.capsule_height * a / 2.0
    return half, half


def _may_hit_bound(
    dot_od: np.ndarray, d_z: np.ndarray, o_sq: np.ndarray, o_z: np.ndarray, cz: float, r: float
) -> np.ndarray:
    """Rays that pass within ``r`` of the point (0, 0, cz) ahead of their origin.

    Takes precomputed ``d·o``, ``d_z``, ``|o|²`` and ``o_z`` so the test is a few vector ops.
    """
    b = dot_od - cz * d_z  # d·(o - c)
    c = o_sq - 2.0 * cz * o_z + cz * cz - r * r  # |o - c|² - r²
    return (b * b >= c) & ((b < 0) | (c < 0))


@dataclass(frozen=True)
class _RoomPass:
    """Everything about one camera azimuth that does not depend on the object.

    Per ray sample: direction, distance to the floor/wall (inf: sky), surface (-1 sky, 0 floor,
    1 wall), hit point, shade without and with the spot light; plus per-pixel sums of the
    floor, wall and sky terms, which the object pass corrects only where the object matters.
    """

    origin: np.ndarray
    dirs: np.ndarray
    t: np.ndarray
    surf: np.ndarray
    shade: np.ndarray  # full shade of floor/wall samples (0 for sky)
    spot: np.ndarray  # the spot light's part of ``shade`` (removed in the object's shadow)
    solid: np.ndarray  # indices of floor/wall samples
    shadow_terms: tuple[np.ndarray, ...]  # (l·p, l_z, |p|², p_z) of solid samples
    pts: np.ndarray  # [n_solid, 3] hit points of solid samples
    lvec: np.ndarray  # [n_solid, 3] unit vectors to the light
    ldist: np.ndarray  # [n_solid] distances to the light
    dot_od: np.ndarray  # d·origin of every sample
    pix_floor: np.ndarray  # per-pixel sums over samples
    pix_wall: np.ndarray
    pix_sky: np.ndarray


def _light_terms(pts: np.ndarray, p: SceneParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit vectors to the spot light, distances to it, and its cone falloff at ``pts``."""
    light = np.asarray(p.light_pos, dtype=np.float64)
    to_light = light - pts
    dist = np.linalg.norm(to_light, axis=1)
    lvec = to_light / np.maximum(dist, 1e-12)[:, None]
    axis = _normalize(np.asarray(p.light_target, dtype=np.float64) - light)
    cos_cone = -(lvec @ axis)
    cone = np.where(
        cos_cone >= np.cos(np.deg2rad(p.light_cutoff_deg)),
        np.maximum(cos_cone, 0.0) ** p.light_exponent,
        0.0,
    )
    return lvec, dist, cone


def _pixel_sums(values: np.ndarray, p: SceneParams) -> np.ndarray:
    return values.reshape(p.image_size**2, p.supersample**2).sum(axis=1)


def _room_pass(azimuth_deg: float, p: SceneParams) -> _RoomPass:
    o, d = camera_rays(azimuth_deg, p)
    t, surf = _room_hit(o, d, p)
    pts = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
    nrm = np.zeros_like(d)
    nrm[surf == 0] = (0.0, 0.0, 1.0)
    wall = surf == 1
    wp = pts[wall]
    wn = np.zeros_like(wp)
    eps = 1e-6
    wn[np.abs(wp[:, 1] - p.back_wall) < eps] = (0.0, -1.0, 0.0)
    wn[np.abs(wp[:, 1] - p.front_wall) < eps] = (0.0, 1.0, 0.0)
    wn[np.abs(wp[:, 0] - p.side_wall) < eps] = (-1.0, 0.0, 0.0)
    wn[np.abs(wp[:, 0] + p.side_wall) < eps] = (1.0, 0.0, 0.0)
    nrm[wall] = wn
    lvec, dist, cone = _light_terms(pts, p)
    tex = np.ones(len(d))
    tex[wall] = _wall_texture(wp, p.wall_texture)
    head = np.maximum(-(nrm * d).sum(axis=1), 0.0)
    lambert = np.maximum((nrm * lvec).sum(axis=1), 0.0)
    is_solid = surf >= 0
    spot = np.where(is_solid, p.light_diffuse * lambert * cone * tex, 0.0)
    shade = np.where(is_solid, (p.ambient + p.headlight * head) * tex, 0.0) + spot
    solid = np.flatnonzero(is_solid)
    sp, sl = pts[solid], lvec[solid]
    shadow_terms = ((sl * sp).sum(axis=1), sl[:, 2].copy(), (sp * sp).sum(axis=1), sp[:, 2].copy())
    return _RoomPass(
        origin=o,
        dirs=d,
        t=t,
        surf=surf,
        shade=shade,
        spot=spot,
        solid=solid,
        shadow_terms=shadow_terms,
        pts=sp,
        lvec=sl,
        ldist=dist[solid],
        dot_od=d @ o,
        pix_floor=_pixel_sums(np.where(surf == 0, shade, 0.0), p),
        pix_wall=_pixel_sums(np.where(surf == 1, shade, 0.0), p),
        pix_sky=_pixel_sums((surf == -1).astype(np.float64), p),
    )


def _object_pass(room: _RoomPass, shape: int, scale: float, p: SceneParams) -> View:
    """Add the object and its shadow to a room pass: corrects only the samples they touch."""
    o, d = room.origin, room.dirs
    ss = p.supersample**2
    npix = p.image_size**2
    cz, rad = object_bound(shape, scale, p)

    # primary rays that hit the object in front of the room
    cand = np.flatnonzero(_may_hit_bound(room.dot_od, d[:, 2], o @ o, o[2], cz, rad))
    t_obj, n_obj = object_hit(o, d[cand], shape, scale, p)
    front = t_obj < room.t[cand]
    hit, n_hit, dh = cand[front], n_obj[front], d[cand[front]]
    pts = o + t_obj[front, None] * dh
    lvec, _, cone = _light_terms(pts, p)
    head = np.maximum(-(n_hit * dh).sum(axis=1), 0.0)
    lambert = np.maximum((n_hit * lvec).sum(axis=1), 0.0)  # convex: self-shadow is n.l < 0
    obj_shade = p.ambient + p.headlight * head + p.light_diffuse * lambert * cone
    spec = p.specular * np.maximum((n_hit * _normalize(lvec - dh)).sum(axis=1), 0.0) ** p.shininess
    spec = spec * cone

    # floor/wall samples in the object's shadow lose the spot light
    covered = np.zeros(len(d), dtype=bool)
    covered[hit] = True
    sel = np.flatnonzero(_may_hit_bound(*room.shadow_terms, cz, rad))
    t_sh, _ = object_hit(room.pts[sel], room.lvec[sel], shape, scale, p)
    shadowed = room.solid[sel[t_sh < room.ldist[sel]]]
    shadowed = shadowed[~covered[shadowed]]

    def pix_sum(samples: np.ndarray, values: np.ndarray) -> np.ndarray:
        return np.bincount(samples // ss, weights=values, minlength=npix)

    surf_hit = room.surf[hit]
    surf_sh = room.surf[shadowed]
    floor = (
        room.pix_floor
        - pix_sum(hit, np.where(surf_hit == 0, room.shade[hit], 0.0))
        - pix_sum(shadowed, np.where(surf_sh == 0, room.spot[shadowed], 0.0))
    )
    wall = (
        room.pix_wall
        - pix_sum(hit, np.where(surf_hit == 1, room.shade[hit], 0.0))
        - pix_sum(shadowed, np.where(surf_sh == 1, room.spot[shadowed], 0.0))
    )
    sky = room.pix_sky - pix_sum(hit, (surf_hit == -1).astype(np.float64))
    obj = pix_sum(hit, obj_shade)
    spec_pix = pix_sum(hit, spec)
    sky_rgb = np.asarray(p.sky_rgb, dtype=np.float64) / 255.0
    const = sky[:, None] * sky_rgb + spec_pix[:, None]

    def weight(x: np.ndarray) -> np.ndarray:
        # clean rounding noise of the subtractions so that "no floor" is exactly 0
        x = np.where(np.abs(x) < 1e-9, 0.0, x)
        return (x / ss * 255.0).astype(np.float32)

    return View(floor=weight(floor), wall=weight(wall), obj=weight(obj), const=weight(const))


def render_view(
    scale: float, shape: int, azimuth_deg: float, p: SceneParams = DEFAULT_SCENE
) -> View:
    """Ray-cast one geometry (``scale`` value, ``shape`` index, azimuth) into colour weights."""
    return _object_pass(_room_pass(azimuth_deg, p), shape, scale, p)


# --- colouring ---------------------------------------------------------------------------------
def combine(
    floor: np.ndarray,
    wall: np.ndarray,
    obj: np.ndarray,
    const: np.ndarray,
    floor_rgb: np.ndarray,
    wall_rgb: np.ndarray,
    obj_rgb: np.ndarray,
) -> np.ndarray:
    """uint8 pixels ``clip(rint(floor·rgb_f + wall·rgb_w + obj·rgb_o + const))``.

    Weights are float32 ``[..., P]``, ``const`` ``[..., P, 3]``, colours float32 ``[..., 3]``
    broadcastable against them. One formula (and one evaluation order) for every code path, so
    the batched and the full-grid images are byte-identical.
    """
    lin = floor[..., None] * floor_rgb[..., None, :]
    lin = lin + wall[..., None] * wall_rgb[..., None, :]
    lin = lin + obj[..., None] * obj_rgb[..., None, :]
    lin = lin + const
    np.rint(lin, out=lin)
    np.clip(lin, 0.0, 255.0, out=lin)
    return lin.astype(np.uint8)


HUE_RGB = hsv_rgb(HUES).astype(np.float32)  # [10, 3]


class ProceduralShapes3D(GroundTruth):
    """Shapes3D re-rendered in numpy (no MuJoCo/OpenGL): same factors, grid order and image format.

    The 480 geometries (scale × shape × orientation) are ray-cast lazily and kept in memory
    (about 220 MB once all exist: float32 weights plus uint8 layers per hue); images are then
    cheap colourings of them. This is a re-rendering that resembles the official images, not a
    copy of them.

    Pixels that see a single surface depend on one hue only, so each geometry keeps three uint8
    layers per hue (floor-only pixels including the sky, wall-only, object-only; disjoint supports,
    zero elsewhere) and an image is the sum of three layers. Edge pixels that mix surfaces are
    combined in float with ``combine``. ``images`` and ``all_images`` share this code, and
    ``reference_images`` evaluates ``combine`` on every pixel to check it.
    """

    name = "shapes3d"
    factor_specs = FACTORS
    image_shape = IMAGE_SHAPE
    source = "procedural"

    def __init__(self, scene: SceneParams = DEFAULT_SCENE) -> None:
        if scene.image_size != IMAGE_SHAPE[0]:
            raise InvalidArgumentError(
                f"shapes3d images are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}, got image_size "
                f"{scene.image_size}"
            )
        if scene.supersample < 1:
            raise InvalidArgumentError(f"supersample must be >= 1, got {scene.supersample}")
        self.scene = scene
        npix = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
        nh = HUES.size
        self._floor = np.zeros((NUM_VIEWS, npix), np.float32)
        self._wall = np.zeros((NUM_VIEWS, npix), np.float32)
        self._obj = np.zeros((NUM_VIEWS, npix), np.float32)
        self._const = np.zeros((NUM_VIEWS, npix, 3), np.float32)
        self._mixed = np.zeros((NUM_VIEWS, npix), dtype=bool)  # pixels mixing surfaces
        self._mixed_pixels = [np.zeros(0, np.int64) for _ in range(NUM_VIEWS)]
        # uint8 layers [view, surface (floor, wall, object), hue, pixel*3]
        self._layers = np.zeros((NUM_VIEWS, 3, nh, npix * 3), np.uint8)
        self._done = np.zeros(NUM_VIEWS, dtype=bool)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        # picklable for DataLoader workers: the rendered views travel along, the lock does not
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    @staticmethod
    def view_index(factors: np.ndarray) -> np.ndarray:
        """Geometry index (0..479) of factor-index rows ``[n, 6]``: ravel of scale, shape, orientation."""
        f = np.asarray(factors)
        return np.ravel_multi_index((f[:, 3], f[:, 4], f[:, 5]), FACTOR_SIZES[3:]).astype(np.int64)

    def ensure_views(self, views: np.ndarray | Sequence[int] | None = None) -> None:
        """Render the geometries ``views`` (all 480 when None) that are not cached yet."""
        todo = np.arange(NUM_VIEWS) if views is None else np.unique(np.asarray(views, np.int64))
        if self._done[todo].all():
            return
        with self._lock:
            todo = todo[~self._done[todo]]
            sc, sh, orient = np.unravel_index(todo, FACTOR_SIZES[3:])

            def render_azimuth(k: int) -> None:  # one room pass per azimuth
                room = _room_pass(float(ORIENTATIONS[k]), self.scene)
                for v, a, b in zip(todo[orient == k], sc[orient == k], sh[orient == k]):
                    self._store(int(v), _object_pass(room, int(b), float(SCALES[a]), self.scene))

            # views are independent and numpy releases the GIL: render azimuths in parallel
            with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
                list(pool.map(render_azimuth, np.unique(orient)))

    def _store(self, v: int, view: View) -> None:
        fl, wa, ob, k = view.floor, view.wall, view.obj, view.const
        only = (
            (wa == 0) & (ob == 0),  # floor or sky (the constant term goes with the floor)
            (fl == 0) & (ob == 0) & (wa != 0),
            (fl == 0) & (wa == 0) & (ob != 0),
        )
        for s_, (w, m) in enumerate(zip((fl, wa, ob), only)):
            # single-surface pixels: combine() reduces exactly to w*rgb + k there (the other
            # terms are +0.0), so this matches combine() bit for bit
            lin = (w * m)[None, :, None] * HUE_RGB[:, None, :] + k * m[:, None]
            np.rint(lin, out=lin)
            np.clip(lin, 0.0, 255.0, out=lin)
            self._layers[v, s_] = lin.astype(np.uint8).reshape(HUES.size, -1)
        self._floor[v], self._wall[v], self._obj[v], self._const[v] = fl, wa, ob, k
        self._mixed[v] = ~(only[0] | only[1] | only[2])
        self._mixed_pixels[v] = np.flatnonzero(self._mixed[v])
        self._done[v] = True

    def view(self, v: int) -> View:
        """Weights of geometry ``v`` (rendered on first use)."""
        if not 0 <= int(v) < NUM_VIEWS:
            raise InvalidArgumentError(f"view index must be 0..{NUM_VIEWS - 1}, got {v}")
        self.ensure_views([int(v)])
        return View(self._floor[v], self._wall[v], self._obj[v], self._const[v])

    def _images(self, indices: np.ndarray) -> np.ndarray:
        f = self.factors(indices)
        v = self.view_index(f)
        self.ensure_views(v)
        out = self._layers[v, 0, f[:, 0]]
        out += self._layers[v, 1, f[:, 1]]
        out += self._layers[v, 2, f[:, 2]]
        out = out.reshape(len(indices), IMAGE_SHAPE[0] * IMAGE_SHAPE[1], 3)
        mixed = [self._mixed_pixels[j] for j in v]
        pix = np.concatenate(mixed) if mixed else np.zeros(0, np.int64)
        if pix.size:
            rows = np.repeat(np.arange(len(v)), [m.size for m in mixed])
            vv = v[rows]
            out[rows, pix] = combine(  # one "pixel axis" of length 1 per mixed pixel
                self._floor[vv, pix, None],
                self._wall[vv, pix, None],
                self._obj[vv, pix, None],
                self._const[vv, pix, None],
                HUE_RGB[f[rows, 0]],
                HUE_RGB[f[rows, 1]],
                HUE_RGB[f[rows, 2]],
            )[:, 0]
        return out.reshape(len(indices), *IMAGE_SHAPE)

    def reference_images(self, indices: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """``images`` evaluated the slow way (``combine`` on every pixel), to check the layers."""
        f = self.factors(indices)
        v = self.view_index(f)
        self.ensure_views(v)
        out = combine(
            self._floor[v],
            self._wall[v],
            self._obj[v],
            self._const[v],
            HUE_RGB[f[:, 0]],
            HUE_RGB[f[:, 1]],
            HUE_RGB[f[:, 2]],
        )
        return out.reshape(len(f), *IMAGE_SHAPE)

    def all_images(self) -> np.ndarray:
        """All 480,000 images (5.9 GB uint8) in grid order; peak memory ≈ output + 0.25 GB."""
        return self.floor_hue_block(0, HUES.size)

    def floor_hue_block(self, start: int, stop: int) -> np.ndarray:
        """Images of floor-hue indices ``start..stop-1``, i.e. the contiguous grid slice
        ``[start·48000, stop·48000)``, built like ``all_images`` (e.g. to benchmark a slice)."""
        nh = HUES.size
        if not (
            isinstance(start, (int, np.integer)) and isinstance(stop, (int, np.integer))
        ) or not (0 <= start < stop <= nh):
            raise InvalidArgumentError(
                f"floor-hue block must satisfy 0 <= start < stop <= {nh}, got {start}..{stop}"
            )
        return self.block(range(start, stop), np.arange(NUM_VIEWS)).reshape(-1, *IMAGE_SHAPE)

    def block(self, floor_hues: Sequence[int], views: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 ``[len(floor_hues)·100, len(views), 64, 64, 3]``: every (floor, wall, object) hue
        triple with floor hue in ``floor_hues`` (floor slowest, object fastest) times every
        geometry in ``views``. With all floor hues and all views in order, this is the grid.
        """
        fh = np.asarray(floor_hues, dtype=np.int64).reshape(-1)
        vs = np.asarray(views, dtype=np.int64).reshape(-1)
        nh = HUES.size
        if fh.size == 0 or fh.min() < 0 or fh.max() >= nh:
            raise InvalidArgumentError(f"floor_hues must be non-empty indices in 0..{nh - 1}")
        if vs.size == 0 or vs.min() < 0 or vs.max() >= NUM_VIEWS:
            raise InvalidArgumentError(f"views must be non-empty indices in 0..{NUM_VIEWS - 1}")
        self.ensure_views(vs)
        npix = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
        nf = fh.size
        out = np.empty((nf * nh * nh, vs.size, npix, 3), dtype=np.uint8)
        hue_f = np.repeat(fh, nh * nh)  # hue triple of each combo
        hue_w = np.tile(np.repeat(np.arange(nh), nh), nf)
        hue_o = np.tile(np.arange(nh), nf * nh)
        rgb_f, rgb_w, rgb_o = HUE_RGB[hue_f], HUE_RGB[hue_w], HUE_RGB[hue_o]

        def colour(j: int) -> None:
            v = vs[j]
            la, lb, lc = self._layers[v]
            ab = (la[fh][:, None] + lb[None, :]).reshape(nf * nh, 1, npix * 3)
            np.add(ab, lc[None], out=out[:, j].reshape(nf * nh, nh, npix * 3))
            m = self._mixed[v]
            if m.any():
                out[:, j, m] = combine(
                    self._floor[v, m],
                    self._wall[v, m],
                    self._obj[v, m],
                    self._const[v, m],
                    rgb_f,
                    rgb_w,
                    rgb_o,
                )

        # numpy releases the GIL in these ufuncs: views fill disjoint columns of ``out`` in parallel
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(colour, range(vs.size)))
        return out.reshape(nf * nh * nh, vs.size, *IMAGE_SHAPE)


# --- the official file -------------------------------------------------------------------------
def expected_labels() -> np.ndarray:
    """float64 ``[480000, 6]`` factor values in grid order, as the official ``labels`` hold them."""
    grids = np.meshgrid(*[f.values for f in FACTORS], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1)


class OfficialShapes3D(GroundTruth):
    """The official ``3dshapes.h5``, read lazily through h5py (use ``load_official``).

    ``images(indices)`` reads only the requested rows (in increasing order, as h5py requires);
    ``all_images()`` reads the whole 5.9 GB array once and keeps it.
    """

    name = "shapes3d"
    factor_specs = FACTORS
    image_shape = IMAGE_SHAPE

    def __init__(self, path: str | os.PathLike) -> None:
        self.source = str(path)
        self._file = None
        self._all: np.ndarray | None = None
        self._lock = threading.Lock()

    def _dataset(self) -> h5py.Dataset:
        if self._file is None:
            self._file = h5py.File(self.source, "r")
        return self._file["images"]

    def __getstate__(self) -> dict:
        # h5py handles cannot be pickled (e.g. into DataLoader workers): reopen lazily there
        state = dict(self.__dict__)
        state["_file"] = None
        state["_all"] = None
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the HDF5 file (it reopens on the next read)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _images(self, indices: np.ndarray) -> np.ndarray:
        if self._all is not None:
            return self._all[indices]
        uniq, inverse = np.unique(indices, return_inverse=True)
        with self._lock:
            ds = self._dataset()
            if uniq.size and uniq[-1] - uniq[0] + 1 == uniq.size:  # contiguous: one slice read
                block = ds[int(uniq[0]) : int(uniq[-1]) + 1]
            else:
                block = ds[uniq] if uniq.size else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        return np.asarray(block, dtype=np.uint8)[inverse.reshape(-1)]

    def all_images(self) -> np.ndarray:
        if self._all is None:
            with self._lock:
                ds = self._dataset()
                out = np.empty(ds.shape, dtype=np.uint8)
                ds.read_direct(out)
                self._all = out
        return self._all


def load_official(path: str | os.PathLike, *, verify_checksum: bool = True) -> OfficialShapes3D:
    """Open the official ``3dshapes.h5`` after checking its structure, checksum and labels.

    Checks, in order: the file exists and is HDF5; ``images`` is uint8 [480000, 64, 64, 3] and
    ``labels`` float64 [480000, 6]; the sha256 is the published one (skipped with
    ``verify_checksum=False``, for deliberately modified copies); the labels hold the factor
    values in grid order (orientation fastest). Raises ``FileNotFoundError``,
    ``DataFormatError`` or ``ChecksumError``; nothing is written.
    """
    p = existing_file(path)
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise DataFormatError(
            f"{p}: cannot be opened as HDF5 ({exc}); expected the official 3dshapes.h5 "
            f"({OFFICIAL_SIZE_BYTES:,} bytes); a truncated download looks like this"
        ) from None
    with f:
        _check_structure(f, p)
        verify_sha256(p, OFFICIAL_SHA256, verify=verify_checksum)
        try:
            labels = f["labels"][()]
        except OSError as exc:  # truncated or corrupt data blocks
            raise DataFormatError(f"{p}: cannot read 'labels' ({exc})") from None
    _check_labels(labels, p)
    return OfficialShapes3D(p)


def _check_structure(f: h5py.File, p: os.PathLike) -> None:
    expected = {
        "images": ((NUM_IMAGES, *IMAGE_SHAPE), np.dtype(np.uint8)),
        "labels": ((NUM_IMAGES, len(FACTORS)), np.dtype(np.float64)),
    }
    for key, (shape, dtype) in expected.items():
        if key not in f or not isinstance(f[key], h5py.Dataset):
            raise DataFormatError(
                f"{p}: has no dataset {key!r} (found {sorted(f.keys())}); expected 'images' "
                f"uint8 {list(expected['images'][0])} and 'labels' float64 "
                f"{list(expected['labels'][0])}"
            )
        ds = f[key]
        if tuple(ds.shape) != shape or ds.dtype != dtype:
            raise DataFormatError(
                f"{p}: dataset {key!r} is {ds.dtype} {list(ds.shape)}, expected {dtype} "
                f"{list(shape)}"
            )


def _check_labels(labels: np.ndarray, p: os.PathLike) -> None:
    want = expected_labels()
    for k, fac in enumerate(FACTORS):
        col = labels[:, k]
        lo, hi = float(fac.values.min()), float(fac.values.max())
        if not np.all(np.isfinite(col)) or col.min() < lo - 1e-6 or col.max() > hi + 1e-6:
            raise DataFormatError(
                f"{p}: labels[:, {k}] ({fac.name}) range {col.min():g}..{col.max():g}, "
                f"expected {lo:g}..{hi:g}"
            )
        bad = np.flatnonzero(np.abs(col - want[:, k]) > 1e-4)
        if bad.size:
            i = int(bad[0])
            raise DataFormatError(
                f"{p}: labels are not in grid order: row {i} has {fac.name}={col[i]:g}, expected "
                f"{want[i, k]:g} (factors {', '.join(x.name for x in FACTORS)}, "
                "orientation fastest)"
            )
