"""dSprites: a procedural renderer faithful to the official images, and the official-file readers.

Geometry (SPEC §2, confirmed on 194 real official frames, see ``benchmarks/calibrate_dsprites.py``):
each image is a vector shape rasterised straight at 64×64 with a pixel-centre inside test (binary,
no anti-aliasing). Pixel ``(row, col)`` has its centre at coordinate ``(row, col)``. The sprite's
rotation centre is at ``15.5 + 32·pos`` in both axes (posX → columns, posY → rows downwards), so one
position step is 32/31 px and a translated sprite does *not* give the raster of a shifted image: the
sub-pixel phase changes which pixel centres fall inside. A growing orientation turns the sprite
counter-clockwise as displayed; the shape is scaled by ``scale`` about the rotation centre.

Rendering is done row by row: for every image row we intersect the horizontal line through the
pixel centres with the rotated, scaled shape, giving a few crossing abscissae ``x_k``; the row is the
XOR of "step" rows that switch on at the first pixel centre right of each crossing. Steps come from
a small table, so a whole row is one table look-up per pair of crossings, shared by all 32 posX.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import DataFormatError, InvalidArgumentError
from .grid import ArrayGroundTruth, Factor, GroundTruth
from .official_files import existing_file, file_digest, verify_sha256

# --- the factor grid (official order without the constant colour factor) ---------------------
SHAPES = ("square", "ellipse", "heart")
SHAPE_VALUES = np.array([1.0, 2.0, 3.0])
SCALE_VALUES = np.linspace(0.5, 1.0, 6)
ORIENTATION_VALUES = np.linspace(0.0, 2.0 * np.pi, 40)
POSITION_VALUES = np.linspace(0.0, 1.0, 32)
FACTOR_NAMES = ("shape", "scale", "orientation", "posX", "posY")
IMAGE_SIZE = 64


def dsprites_factors() -> tuple[Factor, ...]:
    """The five dSprites factors in official order (the last, posY, varies fastest)."""
    return (
        Factor("shape", SHAPE_VALUES.copy(), SHAPES),
        Factor("scale", SCALE_VALUES.copy()),
        Factor("orientation", ORIENTATION_VALUES.copy()),
        Factor("posX", POSITION_VALUES.copy()),
        Factor("posY", POSITION_VALUES.copy()),
    )


# --- fitted geometry ----------------------------------------------------------------------------
# Sprite coordinates: u to the right, v up, unit = one pixel at scale 1, origin = rotation centre.
# All constants below were fitted by ``benchmarks/calibrate_dsprites.py`` on the 194 real frames in
# ``calibration/dsprites_frames_origin.npz``: every real pixel centre is mapped back into sprite
# coordinates (inverse rotation and scale), labelled on/off, and the shape parameters are chosen to
# classify those points with the fewest errors (0 errors for the square and ellipse).
CENTRE_OFFSET = 15.5  # pixel coordinate of the rotation centre at pos = 0
POSITION_SPAN = 32.0  # pixels swept by the rotation centre from pos = 0 to pos = 1
# Square: half side. Any value in (9.5966, 9.5998) classifies every real pixel correctly (the
# official side looks like 0.3 of the 64-px canvas = 19.2 px; at orientation 0 it rasterises to 20).
SQUARE_HALF_SIDE = 9.598
# Ellipse: semi-axes (u, v); long axis horizontal at orientation 0. Zero errors on the real frames.
ELLIPSE_SEMI_AXES = (12.7656, 7.2142)
# Heart: mirror-symmetric, star-shaped about (0, HEART_RADIAL_CENTRE_V); radii at equally spaced
# angles from straight up (the notch between the lobes) to straight down (the tip). Fitted by
# coordinate descent on the radii starting from a two-circles-and-a-tip model: 4 of the ~38,000
# labelled points near the heart are misclassified. Its sides are slightly concave near the tip,
# so a line may cross it more than four times; the renderer handles any even number.
HEART_RADIAL_CENTRE_V = 1.0
HEART_RADII = (
    4.3149, 5.1953, 6.0826, 6.8891, 7.6254, 8.2611, 8.7956, 9.2477, 9.6266, 9.9311,
    10.1703, 10.3533, 10.4994, 10.6080, 10.6587, 10.6411, 10.5651, 10.4509, 10.3086, 10.1286,
    9.9215, 9.6679, 9.3687, 9.0749, 8.7673, 8.4482, 8.1481, 7.8960, 7.6308, 7.4043,
    7.2203, 7.0740, 6.9419, 6.8218, 6.7312, 6.6597, 6.6163, 6.6214, 6.6756, 6.7506,
    6.8381, 6.9515, 7.1148, 7.3337, 7.6242, 8.0168, 8.5433, 9.2500, 10.0100,
)  # fmt: skip


def heart_polygon(
    radii: Sequence[float] = HEART_RADII, centre_v: float = HEART_RADIAL_CENTRE_V
) -> np.ndarray:
    """Heart vertices ``[2m - 2, 2]`` (u right, v up), counter-clockwise, from ``m`` radii."""
    r = np.asarray(radii, dtype=np.float64)
    phi = np.linspace(0.0, np.pi, len(r))  # 0 = up (the notch), pi = down (the tip)
    right = np.stack([r * np.sin(phi), centre_v + r * np.cos(phi)], axis=1)
    left = right[-2:0:-1] * np.array([-1.0, 1.0])
    return np.concatenate([right, left])[::-1].copy()


def square_polygon(half_side: float = SQUARE_HALF_SIDE) -> np.ndarray:
    """Square vertices ``[4, 2]`` (u right, v up), counter-clockwise."""
    h = half_side
    return np.array([[h, h], [-h, h], [-h, -h], [h, -h]], dtype=np.float64)


_POLYGONS = {0: square_polygon(), 2: heart_polygon()}


def _bounding_radius(shape: int) -> float:
    """Largest distance of the unscaled shape from its rotation centre."""
    if shape == 1:
        return float(max(ELLIPSE_SEMI_AXES))
    return float(np.hypot(_POLYGONS[shape][:, 0], _POLYGONS[shape][:, 1]).max())


_RADIUS = {k: _bounding_radius(k) for k in range(3)}


def centre_pixel(position: np.ndarray | float) -> np.ndarray:
    """Pixel coordinate of the rotation centre for a position value in [0, 1]."""
    return CENTRE_OFFSET + POSITION_SPAN * np.asarray(position, dtype=np.float64)


# --- line / shape intersections -------------------------------------------------------------
def _polygon_crossings(
    poly: np.ndarray, scale: np.ndarray, theta: np.ndarray, y: np.ndarray
) -> np.ndarray:
    """Abscissae ``[n, L, k]`` where horizontal lines cross a rotated, scaled polygon.

    ``scale``/``theta`` are ``[n]`` (one sprite each), ``y`` is ``[n, L]`` (downwards, relative to
    the rotation centre). ``k`` is the largest number of crossings of any of these lines (always
    even: the polygon is closed); unused slots hold +inf. Crossings are not sorted: the row builder
    only needs their parity.
    """
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    u, v = poly[None, :, 0], poly[None, :, 1]
    vx = scale[:, None] * (u * c - v * s)  # [n, E] image x (right)
    vy = -scale[:, None] * (u * s + v * c)  # [n, E] image y (down)
    x0, y0 = vx[:, None, :], vy[:, None, :]
    x1, y1 = np.roll(vx, -1, axis=1)[:, None, :], np.roll(vy, -1, axis=1)[:, None, :]
    yl = y[:, :, None]
    hit = (y0 > yl) != (y1 > yl)  # half-open rule: a vertex on the line is counted once
    n, lines = y.shape
    ni, li, ei = np.nonzero(hit)
    if ni.size == 0:
        return np.full((n, lines, 2), np.inf)
    flat = ni * lines + li
    counts = np.bincount(flat, minlength=n * lines)
    k = int(counts.max())
    k += k % 2
    out = np.full((n, lines, k), np.inf)
    start = np.cumsum(counts) - counts
    slot = np.arange(flat.size) - start[flat]
    xa, ya = x0[ni, 0, ei], y0[ni, 0, ei]
    xb, yb = x1[ni, 0, ei], y1[ni, 0, ei]
    out[ni, li, slot] = xa + (y[ni, li] - ya) * (xb - xa) / (yb - ya)
    return out


def _ellipse_crossings(scale: np.ndarray, theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Abscissae ``[n, L, 2]`` where horizontal lines cross a rotated, scaled ellipse (+inf: none)."""
    a, b = ELLIPSE_SEMI_AXES
    c, s = np.cos(theta)[:, None], np.sin(theta)[:, None]
    yu = -y  # upwards
    # (x c + yu s)^2 / a^2 + (-x s + yu c)^2 / b^2 < scale^2, a quadratic in x.
    q2 = c * c / a**2 + s * s / b**2
    q1 = 2.0 * yu * c * s * (1.0 / a**2 - 1.0 / b**2)
    q0 = yu * yu * (s * s / a**2 + c * c / b**2) - scale[:, None] ** 2
    disc = q1 * q1 - 4.0 * q2 * q0
    ok = disc > 0
    root = np.sqrt(np.where(ok, disc, 0.0))
    out = np.full((*y.shape, 2), np.inf)
    out[..., 0] = np.where(ok, (-q1 - root) / (2.0 * q2), np.inf)
    out[..., 1] = np.where(ok, (-q1 + root) / (2.0 * q2), np.inf)
    return out


def _crossings(shape: int, scale: np.ndarray, theta: np.ndarray, y: np.ndarray) -> np.ndarray:
    # 2π and 0 are the same orientation: reduce so that orientation 39 is bit-identical to 0.
    theta = np.mod(theta, 2.0 * np.pi)
    if shape == 1:
        return _ellipse_crossings(scale, theta, y)
    return _polygon_crossings(_POLYGONS[shape], scale, theta, y)


# --- rows from crossings ---------------------------------------------------------------------
def _pair_table() -> np.ndarray:
    """``[65*65, 8]`` uint64 rows: entry ``(a, b)`` is 255 on columns in exactly one of [a,64), [b,64)."""
    cols = np.arange(IMAGE_SIZE)
    steps = np.where(cols[None, :] >= np.arange(IMAGE_SIZE + 1)[:, None], 255, 0).astype(np.uint8)
    pairs = steps[:, None, :] ^ steps[None, :, :]
    return np.ascontiguousarray(pairs.reshape(-1, IMAGE_SIZE)).view(np.uint64)


_PAIRS = _pair_table()


def _rows(xs: np.ndarray, cx: np.ndarray) -> np.ndarray:
    """uint64 rows ``[..., 8]`` from crossings ``xs [..., k]`` (relative) and centres ``cx [...]``.

    Column ``c`` is on iff an odd number of crossings lie left of its centre, i.e. the row is the
    XOR of steps switching on at ``floor(cx + x) + 1``.
    """
    first = np.floor(xs + cx[..., None]) + 1.0
    step = np.clip(first, 0, IMAGE_SIZE, out=first).astype(np.intp)  # +inf -> 64: an empty step
    pair = step[..., 0::2] * (IMAGE_SIZE + 1) + step[..., 1::2]
    rows = _PAIRS[pair[..., 0]]
    for p in range(1, pair.shape[-1]):
        rows ^= _PAIRS[pair[..., p]]
    return rows


def _window(shape: int, scale: float) -> int:
    """Number of image rows that can touch a sprite of this shape and scale."""
    return min(IMAGE_SIZE, 2 * int(np.ceil(_RADIUS[shape] * scale)) + 2)


def _window_starts(cy: np.ndarray, w: int) -> np.ndarray:
    """First row of a ``w``-row window covering a sprite centred at row ``cy``."""
    return np.clip(np.floor(cy - w / 2.0 + 0.5).astype(np.intp), 0, IMAGE_SIZE - w)


# --- the procedural ground truth ---------------------------------------------------------------
_BATCH = 4096  # images per batch in ``images()``


class ProceduralDSprites(GroundTruth):
    """dSprites rendered on the fly, without the official file (SPEC §2 geometry, fitted shapes)."""

    name = "dsprites"
    image_shape = (IMAGE_SIZE, IMAGE_SIZE, 1)
    source = "procedural"

    def __init__(self) -> None:
        self.factor_specs = dsprites_factors()

    def _images(self, indices: np.ndarray) -> np.ndarray:
        n = len(indices)
        buf = np.zeros((n, IMAGE_SIZE, IMAGE_SIZE // 8), np.uint64)
        f = np.stack(np.unravel_index(indices, self.factor_sizes), axis=1)
        for start in range(0, n, _BATCH):  # bounded temporaries for large requests
            fb = f[start : start + _BATCH]
            for shape in np.unique(fb[:, 0]):
                sel = np.nonzero(fb[:, 0] == shape)[0]
                self._render_into(buf[start : start + _BATCH], sel, int(shape), fb[sel])
        return buf.view(np.uint8).reshape(n, IMAGE_SIZE, IMAGE_SIZE, 1)

    def _render_into(self, buf: np.ndarray, sel: np.ndarray, shape: int, f: np.ndarray) -> None:
        scale, theta = SCALE_VALUES[f[:, 1]], ORIENTATION_VALUES[f[:, 2]]
        cx, cy = centre_pixel(POSITION_VALUES[f[:, 3]]), centre_pixel(POSITION_VALUES[f[:, 4]])
        w = _window(shape, float(SCALE_VALUES.max()))
        r = _window_starts(cy, w)[:, None] + np.arange(w)  # [n, w]
        xs = _crossings(shape, scale, theta, r - cy[:, None])
        buf[sel[:, None], r] = _rows(xs, np.broadcast_to(cx[:, None], r.shape))

    def all_images(self) -> np.ndarray:
        """The whole grid (737,280 images, 3.0 GB) rendered block by block into one array."""
        ns, nsc, no, nx, ny = self.factor_sizes
        buf = np.zeros((len(self), IMAGE_SIZE, IMAGE_SIZE // 8), np.uint64)
        blocks = buf.reshape(ns, nsc, no, nx * ny, IMAGE_SIZE, IMAGE_SIZE // 8)

        def render(block_index: int) -> None:
            shape, k, o = np.unravel_index(block_index, (ns, nsc, no))
            _render_block_into(blocks[shape, k, o], int(shape), int(k), int(o))

        # blocks are disjoint and numpy releases the GIL while filling them: use every core
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(render, range(ns * nsc * no)))
        return buf.view(np.uint8).reshape(len(self), IMAGE_SIZE, IMAGE_SIZE, 1)


def _render_block_into(block: np.ndarray, shape: int, scale_idx: int, orient_idx: int) -> None:
    """Render all 32×32 positions of one (shape, scale, orientation) into a zeroed uint64 block.

    ``block`` is ``[32 * 32, 64, 8]`` (posX major, posY minor). The crossings are computed once
    per (posY, row) and shared by the 32 posX, which only shift the step columns.
    """
    nx = ny = len(POSITION_VALUES)
    scale = float(SCALE_VALUES[scale_idx])
    cx = cy = centre_pixel(POSITION_VALUES)
    w = _window(shape, scale)
    r = _window_starts(cy, w)[:, None] + np.arange(w)  # [ny, w]
    lines = (r - cy[:, None]).reshape(1, -1)
    xs = _crossings(shape, np.array([scale]), ORIENTATION_VALUES[[orient_idx]], lines)
    rows = _rows(xs.reshape(ny, w, 1, -1), cx.reshape(1, 1, nx))  # [ny, w, nx, 8]
    img = np.arange(nx)[None, None, :] * ny + np.arange(ny)[:, None, None]  # [ny, 1, nx]
    block[img, r[:, :, None]] = rows


# --- the official files ------------------------------------------------------------------------
NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
HDF5_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.hdf5"
HDF5_SHA256 = "729fa22e884c9c500e1f17415d580746b4c5894fbbb780a1319bbcfa39a745bb"
# Reported by a third party and not confirmed (SPEC §2): a mismatch only warns.
NPZ_MD5_UNCONFIRMED = "7da33b31b13a06f4b04a70402ce90c2e"
NUM_IMAGES = 737_280
_LATENT_NAMES = ("color", *FACTOR_NAMES)  # the official six columns, colour first
_CHUNK = 1 << 15  # images per block when reading or scaling imgs


def load_official(path: str | os.PathLike, verify_checksum: bool = True) -> GroundTruth:
    """The official dSprites file (``.npz`` or ``.hdf5``) as an in-memory ground truth.

    Keys, shapes, dtypes, the grid order of ``latents_classes``, the factor values and the 0/1
    image values are all checked; the hdf5 file's sha256 is checked when ``verify_checksum``
    (the npz's only published hash is unconfirmed, so a mismatch there is a warning). The colour
    factor is dropped and images are returned as uint8 ``[737280, 64, 64, 1]`` in 0/255.
    The npz's ``metadata`` is a pickle (read with ``allow_pickle=True``): only open trusted files.
    """
    return _load(path, verify_checksum=verify_checksum, subset=None)


def _grid(subset: Mapping[str, Sequence[int]] | None) -> tuple[Factor, ...]:
    """The factor grid a file must hold: the full official grid, or (tests only) a sub-grid.

    A sub-grid keeps, per factor, some of the official value indices; a file holding it is
    exactly what ``official[mask]`` would give, with the official class indices and values.
    """
    full = dsprites_factors()
    if subset is None:
        return full
    unknown = set(subset) - set(FACTOR_NAMES)
    if unknown:
        raise InvalidArgumentError(f"unknown dSprites factors {sorted(unknown)}")
    out = []
    for f in full:
        keep = np.asarray(subset.get(f.name, np.arange(f.size)), dtype=np.int64)
        if keep.ndim != 1 or keep.size == 0 or np.any(np.diff(keep) <= 0) or keep[-1] >= f.size:
            raise InvalidArgumentError(
                f"sub-grid of {f.name!r} must be increasing indices < {f.size}"
            )
        cats = None if f.categories is None else tuple(f.categories[i] for i in keep)
        out.append(Factor(f.name, f.values[keep], cats))
    return tuple(out)


def _grid_classes_values(
    subset: Mapping[str, Sequence[int]] | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per official column (colour first): the class indices and values each grid axis holds."""
    classes, values = [np.array([0])], [np.array([1.0])]
    for f in dsprites_factors():
        keep = (
            np.arange(f.size)
            if subset is None or f.name not in subset
            else np.asarray(subset[f.name], dtype=np.int64)
        )
        classes.append(keep)
        values.append(f.values[keep])
    return classes, values


def _load(
    path: str | os.PathLike,
    *,
    verify_checksum: bool,
    subset: Mapping[str, Sequence[int]] | None,
) -> GroundTruth:
    p = existing_file(path)
    factors = _grid(subset)
    n = int(np.prod([f.size for f in factors]))
    suffix = p.suffix.lower()
    if suffix == ".npz":
        imgs = _read_npz(p, n, verify_checksum, subset)
    elif suffix in (".hdf5", ".h5"):
        imgs = _read_hdf5(p, n, verify_checksum, subset)
    else:
        raise DataFormatError(
            f"{p}: unknown dSprites file type {p.suffix!r}; expected the official "
            f"{NPZ_NAME} (.npz) or {HDF5_NAME} (.hdf5)"
        )
    return ArrayGroundTruth("dsprites", factors, imgs, source=str(p))


def _check_shape_dtype(
    p: Path, key: str, shape, dtype: np.dtype, want_shape, kinds: str, want: str
):
    """``kinds``: allowed dtype kinds ("iu", "f"), or "uint8" for exactly uint8."""
    dt = np.dtype(dtype)
    good = dt == np.uint8 if kinds == "uint8" else dt.kind in kinds
    if tuple(shape) != tuple(want_shape) or not good:
        raise DataFormatError(
            f"{p}: {key!r} is {np.dtype(dtype)} {list(shape)}, expected {want} {list(want_shape)}"
        )


def _check_latents(p: Path, classes: np.ndarray, values: np.ndarray, subset) -> None:
    """``latents_classes`` must enumerate the grid in official order, and values must match."""
    want_classes, want_values = _grid_classes_values(subset)
    sizes = [len(c) for c in want_classes]
    n = int(np.prod(sizes))
    strides = n // np.cumprod(sizes)
    for k, name in enumerate(_LATENT_NAMES):
        want = want_classes[k][(np.arange(n) // strides[k]) % sizes[k]]
        if not np.array_equal(classes[:, k], want):
            row = int(np.nonzero(classes[:, k] != want)[0][0])
            raise DataFormatError(
                f"{p}: latents_classes is not in the official grid order: row {row} has {name} "
                f"class {int(classes[row, k])}, expected {int(want[row])}"
            )
    for k, name in enumerate(_LATENT_NAMES):
        want = want_values[k][(np.arange(n) // strides[k]) % sizes[k]]
        bad = ~np.isclose(values[:, k], want, rtol=0, atol=1e-6)
        if bad.any():
            row = int(np.nonzero(bad)[0][0])
            raise DataFormatError(
                f"{p}: latents_values row {row} has {name} = {float(values[row, k]):.6g}, "
                f"expected {float(want[row]):.6g}"
            )


def _to_255(imgs: np.ndarray, p: Path, key: str) -> np.ndarray:
    """Official 0/1 uint8 images ``[n, 64, 64]`` → 0/255 ``[n, 64, 64, 1]``, in place."""
    for start in range(0, len(imgs), _CHUNK):
        block = imgs[start : start + _CHUNK]
        if block.size and block.max() > 1:
            bad = start + int(np.nonzero(block.reshape(len(block), -1).max(1) > 1)[0][0])
            raise DataFormatError(
                f"{p}: {key!r} image {bad} has value {int(imgs[bad].max())}; "
                "official dSprites images are 0/1"
            )
        block *= 255
    return imgs.reshape(*imgs.shape, 1)


def _npz_header(zf: zipfile.ZipFile, member: str, p: Path):
    with zf.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)


_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError)


def _read_npz(p: Path, n: int, verify_checksum: bool, subset) -> np.ndarray:
    """Checked 0/255 images ``[n, 64, 64, 1]`` of an official-format .npz (latents checked first)."""
    want = {"imgs", "latents_values", "latents_classes", "metadata"}
    try:
        with zipfile.ZipFile(p) as zf:
            members = {m.removesuffix(".npy"): m for m in zf.namelist()}
            missing = sorted(want - set(members))
            if missing:
                raise DataFormatError(
                    f"{p}: missing keys {missing}; an official dSprites .npz has "
                    f"{sorted(want)}, this one has {sorted(members)}"
                )
            headers = {k: _npz_header(zf, members[k], p) for k in want - {"metadata"}}
    except DataFormatError:
        raise
    except _NPZ_ERRORS as e:
        raise DataFormatError(
            f"{p}: not a readable .npz archive (truncated or corrupt?): {e}"
        ) from None
    for key, kinds, what, shape in (
        ("imgs", "uint8", "uint8", (n, IMAGE_SIZE, IMAGE_SIZE)),
        ("latents_classes", "iu", "integer", (n, 6)),
        ("latents_values", "f", "float", (n, 6)),
    ):
        h_shape, fortran, dtype = headers[key]
        _check_shape_dtype(p, key, h_shape, dtype, shape, kinds, what)
        if fortran:
            raise DataFormatError(f"{p}: {key!r} is stored in Fortran order, expected C order")
    if verify_checksum:
        md5 = file_digest(p, "md5")
        if md5 != NPZ_MD5_UNCONFIRMED:
            warnings.warn(
                f"{p}: md5 {md5} differs from {NPZ_MD5_UNCONFIRMED}, the md5 a third party "
                "reported for the official .npz (unconfirmed, so not enforced; the structure "
                "checks passed)",
                stacklevel=4,
            )
    try:
        with np.load(p, allow_pickle=True, encoding="latin1") as npz:
            classes = np.asarray(npz["latents_classes"])
            values = np.asarray(npz["latents_values"])
            _check_metadata(p, npz["metadata"])
            _check_latents(p, classes, values, subset)
            imgs = npz["imgs"]
    except DataFormatError:
        raise
    except (*_NPZ_ERRORS, TypeError, AttributeError, ImportError) as e:
        raise DataFormatError(
            f"{p}: could not read the arrays (truncated or corrupt?): {e}"
        ) from None
    return _to_255(imgs, p, "imgs")


def _check_metadata(p: Path, metadata: np.ndarray) -> None:
    """The pickled metadata dict, if it states latent sizes, must state the official ones."""
    meta = metadata.item() if isinstance(metadata, np.ndarray) and metadata.shape == () else None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{p}: 'metadata' is not a pickled dict, got {type(meta).__name__}")
    sizes = meta.get("latents_sizes")
    if sizes is not None and [int(s) for s in np.ravel(sizes)] != [1, 3, 6, 40, 32, 32]:
        raise DataFormatError(
            f"{p}: metadata latents_sizes is {list(np.ravel(sizes))}, expected [1, 3, 6, 40, 32, 32]"
        )


def _read_hdf5(p: Path, n: int, verify_checksum: bool, subset) -> np.ndarray:
    """Checked 0/255 images ``[n, 64, 64, 1]`` of an official-format .hdf5 (latents checked first)."""
    import h5py

    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise DataFormatError(
            f"{p}: not a readable HDF5 file (truncated or corrupt?): {e}"
        ) from None
    with f:
        want = ("imgs", "latents/classes", "latents/values")
        found = []
        f.visit(found.append)
        missing = [k for k in want if not isinstance(f.get(k), h5py.Dataset)]
        if missing:
            raise DataFormatError(
                f"{p}: missing datasets {missing}; an official dSprites .hdf5 has {list(want)}, "
                f"this one has {sorted(found)}"
            )
        ds_imgs, ds_cls, ds_val = (f[k] for k in want)
        _check_shape_dtype(
            p, "imgs", ds_imgs.shape, ds_imgs.dtype, (n, IMAGE_SIZE, IMAGE_SIZE), "uint8", "uint8"
        )
        _check_shape_dtype(
            p, "latents/classes", ds_cls.shape, ds_cls.dtype, (n, 6), "iu", "integer"
        )
        _check_shape_dtype(p, "latents/values", ds_val.shape, ds_val.dtype, (n, 6), "f", "float")
        verify_sha256(p, HDF5_SHA256, verify=verify_checksum)
        try:
            classes, values = ds_cls[()], ds_val[()]
        except (OSError, ValueError) as e:
            raise DataFormatError(
                f"{p}: could not read the latents (truncated or corrupt?): {e}"
            ) from None
        _check_latents(p, classes, values, subset)
        try:
            imgs = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            for start in range(0, n, _CHUNK):
                sel = np.s_[start : min(n, start + _CHUNK)]
                ds_imgs.read_direct(imgs, sel, sel)
        except (OSError, ValueError) as e:
            raise DataFormatError(
                f"{p}: could not read the datasets (truncated or corrupt?): {e}"
            ) from None
    return _to_255(imgs, p, "imgs")
