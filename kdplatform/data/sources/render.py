"""Procedural RGB-D scenes, ray cast: the renderer behind the bundled synthetic data sets
(`depthkd.data.sources.synthetic` writes them in the KITTI and NYU layouts).

The scenes are meant to be learnable, not just well-formed: every frame is ray cast through a
pinhole camera at a known height, so depth carries the monocular cues a CNN uses on real data:
a ground plane whose depth grows towards the horizon, objects at known distances that occlude
each other, textures fixed in world coordinates (their image scale shrinks with distance),
Lambert shading and haze or light falloff with distance. Rendering is vectorised numpy; each
object is only intersected inside its projected screen rectangle.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np

from depthkd.data.constants import (
    KITTI_DEPTH_SCALE,
    KITTI_FOCAL,
    KITTI_MAX_DEPTH,
    KITTI_SIZE,
    NYU_DEPTH_SCALE,
    NYU_FOCAL,
    NYU_MAX_DEPTH,
    NYU_SIZE,
)
from depthkd.errors import ConfigError

Layout = Literal["kitti", "nyu"]

LAYOUTS: tuple[str, ...] = ("kitti", "nyu")
MIN_SIZE = 16
NYU_MIN_DEPTH = 0.7  # Kinect returns nothing closer than this

# per layout: native (height, width), focal length in pixels there, depth PNG scale
NATIVE = {
    "kitti": (KITTI_SIZE, KITTI_FOCAL, KITTI_DEPTH_SCALE),
    "nyu": (NYU_SIZE, NYU_FOCAL, NYU_DEPTH_SCALE),
}
_NOISE_CELLS = 64  # value-noise lattice side; a power of two so indices wrap with a bit mask
_GRAIN_BITS = 2  # value noise runs 2**_GRAIN_BITS times finer than checker and stripes
_CURVED = 6  # face code of sphere pixels, whose shading lives in Canvas.curved
_BAND_PIXELS = 32768
_TEXTURE_CAP = 1000.0  # metres; farther texture is hidden by haze and would only lose precision


@dataclass
class _Canvas:
    """A pinhole camera plus the z-buffer primitives are drawn into.

    Rays are never stored for the whole frame: `_rays` builds them for a window from the pixel
    offsets `xc`, `yc` and the camera-to-world rotation `rot`, scaled so their camera-z
    component is 1, which makes the ray parameter of a hit its depth. `light` is the unit vector
    towards the (distant) light. `face` codes the hit face as 2 * axis + (ray component along
    that axis > 0), which is all axis-aligned faces need for shading; sphere pixels have code
    `_CURVED` and their Lambert term in `curved`.
    """

    rot: np.ndarray
    focal: float
    xc: np.ndarray
    yc: np.ndarray
    light: np.ndarray
    depth: np.ndarray
    material: np.ndarray
    face: np.ndarray
    curved: np.ndarray
    materials: list[np.ndarray] = field(default_factory=list)


def render_scene(
    layout: Layout, rng: np.random.Generator, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Render one random scene with its ground-truth depth.

    The focal length is the dataset's native one scaled by `width / native_width`, matching the
    focal `write_synthetic` writes into split files. KITTI-like depth is sparse like projected
    LiDAR (sky and beyond 80 m invalid); NYU-like depth is dense apart from Kinect-like holes.

    Args:
        layout: "kitti" (street, sky, sparse depth) or "nyu" (room, dense depth with holes).
        rng: source of all randomness; the same generator state gives the same scene.
        height: image height in pixels (>= 16).
        width: image width in pixels (>= 16).

    Returns:
        (rgb uint8 (H, W, 3), depth float32 (H, W) in metres, 0 = invalid).

    Raises:
        ConfigError: unknown layout or a size below 16 pixels.
    """
    check_layout(layout)
    check_size("height", height)
    check_size("width", width)
    focal = focal_length(layout, width)
    if layout == "kitti":
        return _render_kitti(rng, height, width, focal)
    return _render_nyu(rng, height, width, focal)


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ConfigError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")


def check_size(name: str, value: int) -> None:
    if not is_int(value) or value < MIN_SIZE:
        raise ConfigError(f"{name} must be an integer >= {MIN_SIZE}, got {value!r}")


def is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def focal_length(layout: str, width: int) -> float:
    (_, native_w), focal, _ = NATIVE[layout]
    return focal * width / native_w


# --- scenes ----------------------------------------------------------------------------------


def _render_kitti(
    rng: np.random.Generator, height: int, width: int, focal: float
) -> tuple[np.ndarray, np.ndarray]:
    cam_h = rng.uniform(1.55, 1.8)
    pitch, yaw = np.radians(rng.uniform((-1.5, -4.0), (2.5, 4.0)))
    sun = _unit(rng.uniform(-1.0, 1.0), -rng.uniform(0.4, 1.2), rng.uniform(-1.0, 1.0))
    cv = _canvas(height, width, focal, pitch, yaw, sun)
    road = _draw_street(cv, rng, cam_h)
    for side in (-1.0, 1.0):
        _draw_buildings(cv, rng, cam_h, road, side)
    _draw_cars(cv, rng, cam_h, road)
    _draw_poles(cv, rng, cam_h, road)
    haze = partial(_haze, _sky(cv, rng), np.float32(rng.uniform(150.0, 400.0)))
    rgb = _shade(cv, rng, rng.uniform(0.35, 0.55), haze)
    return rgb, _lidar_depth(cv.depth, rng)


def _render_nyu(
    rng: np.random.Generator, height: int, width: int, focal: float
) -> tuple[np.ndarray, np.ndarray]:
    cam_h = rng.uniform(1.0, 1.6)
    pitch, yaw = np.radians(rng.uniform((-5.0, -20.0), (15.0, 20.0)))
    lamp = _unit(rng.uniform(-0.5, 0.5), -1.0, rng.uniform(-0.5, 0.5))
    cv = _canvas(height, width, focal, pitch, yaw, lamp)
    # The far corners stay within sqrt(3.5^2 + 8^2 + 2.2^2) < 10 m: the whole room is in range.
    lo = np.array([-rng.uniform(1.2, 3.5), cam_h - rng.uniform(2.4, 3.2), -1.0])
    hi = np.array([rng.uniform(1.2, 3.5), cam_h, rng.uniform(3.0, 8.0)])
    _draw_room(cv, rng, lo, hi)
    for _ in range(rng.integers(2, 8)):
        _draw_furniture(cv, rng, lo, hi)
    for _ in range(rng.integers(0, 3)):
        _draw_ball(cv, rng, lo, hi)
    for _ in range(rng.integers(0, 3)):
        _draw_picture(cv, rng, lo, hi)
    gain, reach = np.float32(rng.uniform(1.0, 1.3)), np.float32(rng.uniform(4.0, 8.0))
    rgb = _shade(cv, rng, rng.uniform(0.4, 0.6), partial(_falloff, gain, reach))
    return rgb, _kinect_depth(cv.depth, rng)


def _draw_street(cv: _Canvas, rng: np.random.Generator, cam_h: float) -> tuple[float, float]:
    """Draw the ground plane (road, markings, verges); return (road centre x, road half width)."""
    centre, half = rng.uniform(-1.5, 1.5), rng.uniform(3.0, 6.0)
    road = _material(cv, np.full(3, rng.uniform(70, 110)), 0.7, 0.4, noise=1.0)
    paint = _material(cv, np.full(3, rng.uniform(200, 235)), 0.9, 0.3, noise=0.4)
    left, right = _verge_material(cv, rng), _verge_material(cv, rng)
    for rows in _frame_bands(cv):
        dx, dy, dz = _rays(cv, rows)
        # Without roll the ground depth depends on the row only; rows at or above the horizon
        # never meet the ground and stay at depth inf (sky).
        row_dy = dy[:, :1]
        t = np.where(row_dy > 1e-6, cam_h / np.maximum(row_dy, 1e-6), np.inf).astype(np.float32)
        reach = np.minimum(t, np.float32(_TEXTURE_CAP))
        off = reach * dx - np.float32(centre)
        dash = reach * dz * np.float32(1.0 / 3.0)  # 3 m dashes, 3 m gaps
        material = np.where(off < 0, np.uint8(left), np.uint8(right))
        side = np.abs(off)
        np.copyto(material, np.uint8(road), where=side < half)
        marking = (side < 0.08) & ((np.floor(dash).astype(np.int32) & 1) == 0)
        marking |= np.abs(side - np.float32(half - 0.3)) < 0.08
        np.copyto(material, np.uint8(paint), where=marking)
        cv.material[rows] = material
        cv.depth[rows] = t
    # The ground is hit from above (axis y, ray going down); the sky's face is irrelevant
    # because haze replaces its colour entirely.
    cv.face[...] = 3
    return centre, half


def _verge_material(cv: _Canvas, rng: np.random.Generator) -> int:
    if rng.random() < 0.5:
        grass = (rng.uniform(40, 80), rng.uniform(90, 140), rng.uniform(30, 60))
        return _material(cv, grass, 0.6, 0.6, noise=1.0)
    pavement = np.full(3, rng.uniform(120, 170)) + rng.uniform(-10, 10, 3)
    return _material(cv, pavement, 0.75, rng.uniform(0.5, 1.0), check=0.6, noise=0.3)


def _draw_buildings(
    cv: _Canvas, rng: np.random.Generator, cam_h: float, road: tuple[float, float], side: float
) -> None:
    if rng.random() < 0.2:
        return  # an open side shows far ground and sky
    centre, half = road
    front = half + rng.uniform(1.5, 5.0)
    z = rng.uniform(-5.0, 10.0)
    while z < 150.0:
        length = rng.uniform(8.0, 25.0)
        if rng.random() < 0.8:
            setback = front + rng.uniform(0.0, 2.0)
            xs = sorted((centre + side * setback, centre + side * (setback + 12.0)))
            top = cam_h - rng.uniform(4.0, 18.0)
            # A checker at storey scale reads as rows of windows.
            facade = _material(
                cv, rng.uniform(70, 210, 3), 0.55, rng.uniform(1.5, 3.5), check=0.6, noise=0.3
            )
            _draw_box(cv, (xs[0], top, z), (xs[1], cam_h, z + length), facade)
        z += length + rng.uniform(0.0, 8.0)


def _draw_cars(
    cv: _Canvas, rng: np.random.Generator, cam_h: float, road: tuple[float, float]
) -> None:
    centre, half = road
    for _ in range(rng.integers(0, 7)):
        x = centre + rng.choice((-1.0, 1.0)) * rng.uniform(0.2, 0.75) * half
        z, width, length = rng.uniform(4.0, 70.0), rng.uniform(1.6, 2.0), rng.uniform(3.6, 4.8)
        body_h, cabin_h = rng.uniform(0.7, 1.0), rng.uniform(0.45, 0.65)
        paint = _material(cv, rng.uniform(20, 230, 3), 0.8, 0.5, noise=0.15)
        glass = _material(cv, np.full(3, rng.uniform(20, 60)), 0.8, 0.5, noise=0.2)
        x0, x1 = x - width / 2, x + width / 2
        roof = cam_h - body_h
        # The body floats 15 cm up, so the road shows under it as on a real car.
        _draw_box(cv, (x0, roof, z), (x1, cam_h - 0.15, z + length), paint)
        cabin = ((x0 + 0.1, roof - cabin_h, z + 0.25 * length), (x1 - 0.1, roof, z + 0.75 * length))
        _draw_box(cv, *cabin, glass)


def _draw_poles(
    cv: _Canvas, rng: np.random.Generator, cam_h: float, road: tuple[float, float]
) -> None:
    centre, half = road
    for _ in range(rng.integers(0, 8)):
        x = centre + rng.choice((-1.0, 1.0)) * (half + rng.uniform(0.5, 2.5))
        z, tall = rng.uniform(6.0, 70.0), rng.uniform(2.5, 6.0)
        trunk = _material(cv, rng.uniform(60, 120, 3), 0.7, 0.3, noise=0.5)
        _draw_box(cv, (x - 0.12, cam_h - tall, z - 0.12), (x + 0.12, cam_h, z + 0.12), trunk)
        if rng.random() < 0.5:
            radius = rng.uniform(1.0, 2.5)
            leaves = (rng.uniform(30, 70), rng.uniform(70, 130), rng.uniform(20, 50))
            crown = _material(cv, leaves, 0.5, 0.25, noise=1.0)
            _draw_sphere(cv, (x, cam_h - tall - 0.6 * radius, z), radius, crown)


def _draw_room(cv: _Canvas, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> None:
    """Draw the inside of the box [lo, hi] around the camera: walls, floor and ceiling."""
    wall = rng.uniform(140, 230, 3)
    walls = [_material(cv, wall + rng.uniform(-15, 15, 3), 0.85, 0.5, noise=0.2) for _ in range(3)]
    ceiling = _material(cv, np.full(3, rng.uniform(200, 240)), 0.9, 0.5, noise=0.1)
    floor = _floor_material(cv, rng)
    # Indexed by face code: -x wall, +x wall, ceiling, floor, wall behind, back wall.
    by_face = np.array([walls[0], walls[1], ceiling, floor, walls[2], walls[2]], np.uint8)
    for rows in _frame_bands(cv):
        rays = _rays(cv, rows)
        # lo < 0 < hi on every axis, so the larger of the two plane distances is the exit.
        with np.errstate(divide="ignore"):  # a zero ray component never reaches that plane
            tx, ty, tz = (
                np.maximum(np.float32(low) / d, np.float32(high) / d)
                for d, low, high in zip(rays, lo, hi, strict=True)
            )
        np.minimum(np.minimum(tx, ty), tz, out=cv.depth[rows])
        is_x = (tx <= ty) & (tx <= tz)
        cv.face[rows] = _face_code(is_x, ~is_x & (ty <= tz), rays)
    cv.material[...] = np.take(by_face, cv.face)


def _floor_material(cv: _Canvas, rng: np.random.Generator) -> int:
    kind = rng.integers(0, 3)
    if kind == 0:
        wood = (rng.uniform(100, 170), rng.uniform(60, 110), rng.uniform(30, 70))
        return _material(cv, wood, 0.7, rng.uniform(0.1, 0.2), stripe=0.5, noise=0.4)
    if kind == 1:
        tiles = np.full(3, rng.uniform(150, 220)) + rng.uniform(-15, 15, 3)
        return _material(cv, tiles, 0.7, rng.uniform(0.3, 0.6), check=0.6, noise=0.2)
    return _material(cv, rng.uniform(40, 160, 3), 0.6, 0.15, noise=1.0)


def _draw_furniture(cv: _Canvas, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> None:
    width, deep, tall = rng.uniform(0.4, 1.8), rng.uniform(0.4, 1.2), rng.uniform(0.3, 2.0)
    x0 = rng.uniform(lo[0], max(lo[0], hi[0] - width))
    z0 = hi[2] - deep if rng.random() < 0.3 else rng.uniform(1.0, max(1.0, hi[2] - deep))
    colour = rng.uniform(40, 210, 3)
    kind = rng.integers(0, 3)
    if kind == 0:
        finish = _material(cv, colour, 0.7, 0.08, stripe=0.5, noise=0.3)  # wood grain
    elif kind == 1:
        finish = _material(cv, colour, 0.7, 0.3, check=0.4, noise=0.2)  # panels
    else:
        finish = _material(cv, colour, 0.7, 0.2, noise=0.6)  # fabric
    floor_y = hi[1]
    if rng.random() < 0.35:
        _draw_table(cv, (x0, z0, width, deep), floor_y, rng.uniform(0.45, 0.8), finish)
        return
    _draw_box(cv, (x0, floor_y - tall, z0), (x0 + width, floor_y, z0 + deep), finish)


def _draw_table(
    cv: _Canvas,
    footprint: tuple[float, float, float, float],
    floor_y: float,
    tall: float,
    finish: int,
) -> None:
    x0, z0, width, deep = footprint
    top = floor_y - tall
    _draw_box(cv, (x0, top, z0), (x0 + width, top + 0.05, z0 + deep), finish)
    for lx in (x0, x0 + width - 0.05):
        for lz in (z0, z0 + deep - 0.05):
            _draw_box(cv, (lx, top + 0.05, lz), (lx + 0.05, floor_y, lz + 0.05), finish)


def _draw_ball(cv: _Canvas, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> None:
    radius = rng.uniform(0.1, 0.35)
    x, z = rng.uniform(lo[0] + radius, hi[0] - radius), rng.uniform(1.0, hi[2] - radius)
    ball = _material(cv, rng.uniform(30, 230, 3), 0.6, 0.1, noise=0.5)
    _draw_sphere(cv, (x, hi[1] - radius, z), radius, ball)


def _draw_picture(cv: _Canvas, rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> None:
    width, tall = rng.uniform(0.3, 1.2), rng.uniform(0.3, 0.9)
    x0 = rng.uniform(lo[0], max(lo[0], hi[0] - width))
    y0 = rng.uniform(lo[1] + 0.3, max(lo[1] + 0.3, hi[1] - 0.8 - tall))
    art = _material(cv, rng.uniform(30, 230, 3), 0.3, rng.uniform(0.05, 0.2), noise=1.0)
    _draw_box(cv, (x0, y0, hi[2] - 0.03), (x0 + width, y0 + tall, hi[2] + 0.01), art)


# --- camera, z-buffer and primitives ---------------------------------------------------------


def _canvas(
    height: int, width: int, focal: float, pitch: float, yaw: float, light: np.ndarray
) -> _Canvas:
    """Set up a pinhole camera at the origin, pitched down by `pitch`, then turned by `yaw`.

    World axes: x right, y down, z forward, so the ground is the plane y = camera height.
    """
    cp, sp, cy, sy = math.cos(pitch), math.sin(pitch), math.cos(yaw), math.sin(yaw)
    pitch_rot = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])
    yaw_rot = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    return _Canvas(
        rot=yaw_rot @ pitch_rot,
        focal=focal,
        xc=(np.arange(width, dtype=np.float32) + 0.5 - width / 2) / np.float32(focal),
        yc=(np.arange(height, dtype=np.float32) + 0.5 - height / 2) / np.float32(focal),
        light=light,
        depth=np.full((height, width), np.inf, np.float32),
        material=np.zeros((height, width), np.uint8),
        face=np.zeros((height, width), np.uint8),
        curved=np.zeros((height, width), np.float32),
    )


def _rays(
    cv: _Canvas, rows: slice, cols: slice = slice(None)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World-space ray directions (camera-z component 1) of the pixels in a window."""
    xc, yc = cv.xc[cols][None, :], cv.yc[rows][:, None]
    rx, ry, rz = (r[0] * xc + r[1] * yc + r[2] for r in cv.rot.astype(np.float32))
    return rx, ry, rz


def _bands(start: int, stop: int, width: int) -> list[slice]:
    """Split rows [start, stop) of a `width`-pixel-wide region into bands of ~_BAND_PIXELS.

    Frame-sized passes run band by band so their temporaries stay small and cache-resident:
    fresh frame-sized temporaries cost more in page faults than the arithmetic itself.
    """
    step = max(1, _BAND_PIXELS // width)
    return [slice(top, min(top + step, stop)) for top in range(start, stop, step)]


def _frame_bands(cv: _Canvas) -> list[slice]:
    height, width = cv.depth.shape
    return _bands(0, height, width)


def _material(
    cv: _Canvas,
    base: Sequence[float] | np.ndarray,
    contrast: float,
    scale: float,
    *,
    check: float = 0.0,
    stripe: float = 0.0,
    noise: float = 0.0,
) -> int:
    """Register a material; its colour runs from `base` to `base * contrast` with the pattern.

    `scale` is the pattern period in metres; the weights mix a checkerboard, stripes and value
    noise, all evaluated in world coordinates.
    """
    base = np.asarray(base, np.float32)
    row = np.concatenate(
        [base, base * contrast, [(1 << _GRAIN_BITS) / scale, check, stripe, noise]]
    )
    cv.materials.append(row.astype(np.float32))
    return len(cv.materials) - 1


_BITS = (np.arange(8)[:, None] >> np.arange(3)) & 1  # corner c of a box takes hi where bit set
_EDGES = np.array([(c, c | 1 << k) for c in range(8) for k in range(3) if not c & 1 << k])
_NEAR = 0.05


def _window(cv: _Canvas, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice] | None:
    """Screen rectangle covering the box [lo, hi], or None when it is off screen.

    The box is clipped to the part in front of the camera first (corners in front plus where
    edges cross the near plane), so boxes reaching behind the camera still get a tight window.
    """
    cam = np.where(_BITS, hi, lo) @ cv.rot
    ahead = cam[:, 2] >= _NEAR
    i, j = _EDGES[ahead[_EDGES[:, 0]] != ahead[_EDGES[:, 1]]].T
    along = (_NEAR - cam[i, 2]) / (cam[j, 2] - cam[i, 2])
    points = np.concatenate([cam[ahead], cam[i] + along[:, None] * (cam[j] - cam[i])])
    if len(points) == 0:
        return None
    height, width = cv.depth.shape
    u = cv.focal * points[:, 0] / points[:, 2] + width / 2 - 0.5
    v = cv.focal * points[:, 1] / points[:, 2] + height / 2 - 0.5
    u0, u1 = max(0, math.floor(u.min())), min(width, math.ceil(u.max()) + 1)
    v0, v1 = max(0, math.floor(v.min())), min(height, math.ceil(v.max()) + 1)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def _face_code(is_x: np.ndarray, is_y: np.ndarray, rays: Sequence[np.ndarray]) -> np.ndarray:
    """Face code 2 * axis + (ray runs along +axis) for the axis each pixel hit (else z)."""
    is_z = ~(is_x | is_y)
    dx, dy, dz = rays
    positive = (is_x & (dx > 0)) | (is_y & (dy > 0)) | (is_z & (dz > 0))
    return (is_z.view(np.uint8) << 2) | (is_y.view(np.uint8) << 1) | positive.view(np.uint8)


def _draw_box(cv: _Canvas, lo: Sequence[float], hi: Sequence[float], material: int) -> None:
    """Z-buffer an axis-aligned box [lo, hi], the camera being outside it."""
    lo_a, hi_a = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    _draw(cv, lo_a, hi_a, partial(_box_band, lo_a, hi_a, np.uint8(material)))


def _draw_sphere(cv: _Canvas, centre: Sequence[float], radius: float, material: int) -> None:
    """Z-buffer a sphere; its Lambert term goes to `curved` so shading shows the roundness."""
    c = np.asarray(centre, np.float32)
    band = partial(_sphere_band, c, np.float32(radius), np.uint8(material))
    _draw(cv, c - radius, c + radius, band)


def _draw(
    cv: _Canvas,
    lo: np.ndarray,
    hi: np.ndarray,
    band_fn: Callable[[_Canvas, slice, slice], None],
) -> None:
    """Run `band_fn` over the bands of the screen window of the bounding box [lo, hi]."""
    win = _window(cv, lo, hi)
    if win is None:
        return
    rows, cols = win
    for band in _bands(rows.start, rows.stop, cols.stop - cols.start):
        band_fn(cv, band, cols)


def _box_band(
    lo: np.ndarray, hi: np.ndarray, material: np.uint8, cv: _Canvas, rows: slice, cols: slice
) -> None:
    """Slab-method ray / box intersection and z-test over one window band."""
    rays = _rays(cv, rows, cols)
    near, far = [], []
    with np.errstate(divide="ignore", invalid="ignore"):  # zero components: no hit, no error
        for d, low, high in zip(rays, lo, hi, strict=True):
            t0, t1 = low / d, high / d
            near.append(np.minimum(t0, t1))
            far.append(np.maximum(t0, t1))
    t_near = np.maximum(np.maximum(near[0], near[1]), near[2])
    t_far = np.minimum(np.minimum(far[0], far[1]), far[2])
    depth = cv.depth[rows, cols]
    hit = (t_near <= t_far) & (t_near > 0) & (t_near < depth)
    is_x = near[0] == t_near
    face = _face_code(is_x, ~is_x & (near[1] == t_near), rays)
    np.copyto(depth, t_near, where=hit)
    np.copyto(cv.face[rows, cols], face, where=hit)
    np.copyto(cv.material[rows, cols], material, where=hit)


def _sphere_band(
    c: np.ndarray, radius: np.float32, material: np.uint8, cv: _Canvas, rows: slice, cols: slice
) -> None:
    """Ray / sphere intersection (nearer root) and z-test over one window band."""
    dx, dy, dz = _rays(cv, rows, cols)
    a = dx * dx + dy * dy + dz * dz
    b = dx * c[0] + dy * c[1] + dz * c[2]
    disc = b * b - a * (c @ c - radius * radius)
    t = (b - np.sqrt(np.maximum(disc, 0.0))) / a
    depth = cv.depth[rows, cols]
    hit = (disc > 0) & (t > 0) & (t < depth)
    # n . l with the unit normal n = (t * d - c) / radius.
    lit = sum(
        (t * d - cc) * np.float32(ll / radius)
        for d, cc, ll in zip((dx, dy, dz), c, cv.light, strict=True)
    )
    np.copyto(depth, t, where=hit)
    np.copyto(cv.face[rows, cols], np.uint8(_CURVED), where=hit)
    np.copyto(cv.material[rows, cols], material, where=hit)
    np.copyto(cv.curved[rows, cols], np.maximum(lit, 0.0), where=hit)


# --- shading and sensors ---------------------------------------------------------------------


def _unit(x: float, y: float, z: float) -> np.ndarray:
    v = np.array([x, y, z])
    return v / np.linalg.norm(v)


def _shade(
    cv: _Canvas,
    rng: np.random.Generator,
    ambient: float,
    finish: Callable[[np.ndarray, np.ndarray, slice], np.ndarray],
) -> np.ndarray:
    """Turn the z-buffer into uint8 RGB (H, W, 3): texture, light, then `finish` with distance."""
    noise = _noise_tables(rng)
    grain = np.float32(rng.uniform(2.0, 8.0))
    table = np.stack(cv.materials)
    rgb = np.empty((*cv.depth.shape, 3), np.uint8)
    for rows in _frame_bands(cv):
        colour = _albedo(cv, rows, table, noise) * _lambert(cv, rows, ambient)
        colour = finish(colour, cv.depth[rows], rows)
        rgb[rows] = _to_uint8(colour, rng, grain)
    return rgb


def _lambert(cv: _Canvas, rows: slice, ambient: float) -> np.ndarray:
    """Ambient plus diffuse light, float32 (h, W)."""
    lx, ly, lz = cv.light
    # Face 2k + 1 was hit by a ray going along +axis k, so its outward normal is -e_k.
    per_face = np.maximum(np.array([lx, -lx, ly, -ly, lz, -lz, 0.0], np.float32), 0.0)
    face = cv.face[rows]
    lit = np.where(face == _CURVED, cv.curved[rows], np.take(per_face, face))
    return np.float32(ambient) + np.float32(1.0 - ambient) * lit


def _albedo(cv: _Canvas, rows: slice, table: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """Textured surface colour, float32 (3, h, W) (channels first keeps numpy loops long)."""
    index = cv.material[rows].astype(np.intp)
    reach = np.minimum(cv.depth[rows], np.float32(_TEXTURE_CAP))
    px, py, pz = (reach * d for d in _rays(cv, rows))
    axis = cv.face[rows] >> 1
    # Texture coordinates span the hit face's plane; spheres (axis 3) take x and y.
    a = np.where(axis == 0, pz, px)
    b = np.where(axis == 1, pz, py)
    mix = _pattern(table, index, a, b, noise)
    low, span = table[:, :3], table[:, 3:6] - table[:, :3]
    return np.stack(
        [np.take(low[:, c], index) + np.take(span[:, c], index) * mix for c in range(3)]
    )


def _pattern(
    table: np.ndarray, index: np.ndarray, a: np.ndarray, b: np.ndarray, noise: np.ndarray
) -> np.ndarray:
    """Per-pixel mix of checkerboard, stripes and value noise at the material's scale."""
    inv_scale, check, stripe, grain = (np.take(table[:, k], index) for k in range(6, 10))
    # One lattice serves all three: its cells are _GRAIN times finer than the pattern period,
    # so the noise has fine grain and the checker / stripe cells are the lattice cells >> 2.
    a = a * inv_scale
    b = b * inv_scale
    ia, ib = np.floor(a), np.floor(b)
    a -= ia
    b -= ib
    ia, ib = ia.astype(np.int32), ib.astype(np.int32)
    coarse_b = ib >> _GRAIN_BITS
    mix = check * ((((ia >> _GRAIN_BITS) + coarse_b) & 1) == 1)
    mix += stripe * ((coarse_b & 1) == 1)
    mask = _NOISE_CELLS - 1
    cell = ((ib & mask) * _NOISE_CELLS) | (ia & mask)
    # Bilinear interpolation between the cell's corner values; a and b are now in-cell offsets.
    c00, c10, c01, c11 = (np.take(corner, cell) for corner in noise)
    top = c00 + a * (c10 - c00)
    bottom = c01 + a * (c11 - c01)
    mix += grain * (top + b * (bottom - top))
    return mix


def _noise_tables(rng: np.random.Generator) -> np.ndarray:
    """Draw a wrapping noise lattice as four flat tables: a cell's corners at the cell's index."""
    lattice = rng.random((_NOISE_CELLS, _NOISE_CELLS), dtype=np.float32)
    right = np.roll(lattice, -1, axis=1)
    corners = [lattice, right, np.roll(lattice, -1, axis=0), np.roll(right, -1, axis=0)]
    return np.stack(corners).reshape(4, -1)


def _sky(cv: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """Sky colour per row, float32 (3, H, 1): hazy at the horizon, blue towards the zenith."""
    horizon = rng.uniform(185, 235) + rng.uniform(-8, 8, 3)
    zenith = np.array([rng.uniform(60, 120), rng.uniform(110, 170), rng.uniform(180, 240)])
    # Without roll the ray's y component depends on the row only.
    _, dy, _ = _rays(cv, slice(None), slice(0, 1))
    up = np.clip(-1.5 * dy[:, 0], 0.0, 1.0)
    return (horizon[:, None] + (zenith - horizon)[:, None] * up).astype(np.float32)[..., None]


def _haze(
    sky: np.ndarray, fog: np.float32, colour: np.ndarray, depth: np.ndarray, rows: slice
) -> np.ndarray:
    """Blend colour towards the sky with distance; the sky itself (depth inf) is all haze."""
    veil = 1.0 - np.exp(-depth / fog)
    return colour + (sky[:, rows] - colour) * veil


def _falloff(
    gain: np.float32, reach: np.float32, colour: np.ndarray, depth: np.ndarray, rows: slice
) -> np.ndarray:
    """Dim colour with distance from the lamps around the camera: far walls are darker."""
    return colour * (gain / (1.0 + np.square(depth / reach)))


def _to_uint8(colour: np.ndarray, rng: np.random.Generator, amplitude: np.float32) -> np.ndarray:
    """Add uniform sensor grain to (3, h, W) colour and return it as uint8 (h, W, 3)."""
    grain = rng.random(colour.shape[1:], dtype=np.float32) - np.float32(0.5)
    grain *= amplitude
    colour += grain
    np.clip(colour, 0.0, 255.0, out=colour)
    return colour.astype(np.uint8).transpose(1, 2, 0)


def _lidar_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sparse LiDAR-like GT: jittered scan rows with dropout, nothing in the sky or beyond 80 m."""
    height, width = depth.shape
    lines = rng.random(height) < rng.uniform(0.4, 0.6)
    # Each column reads the scan-line pattern shifted by -1, 0 or +1 rows.
    shift = rng.integers(-1, 2, width)
    scan = np.zeros((height, width), bool)
    for offset in (-1, 0, 1):
        shifted = np.roll(lines, -offset)[:, None]
        scan |= shifted & (shift == offset)
    scan &= depth <= KITTI_MAX_DEPTH
    # Scale the dropout to the scanned share so density stays on target however much is sky.
    keep = rng.uniform(0.15, 0.25) / max(float(scan.mean()), 1e-6)
    scan &= rng.integers(0, 256, (height, width), dtype=np.uint8) < min(255, round(keep * 256))
    return np.where(scan, depth, np.float32(0.0))


def _kinect_depth(depth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dense Kinect-like GT: out-of-range pixels, edge shadows and random blobs are holes."""
    valid = (depth >= NYU_MIN_DEPTH) & (depth <= NYU_MAX_DEPTH)
    # The IR projector sits beside the camera, so the background just right of a foreground
    # edge gets no pattern and no depth.
    valid[:, 1:] &= depth[:, 1:] - depth[:, :-1] <= 0.1 * depth[:, :-1]
    height, width = depth.shape
    for _ in range(rng.integers(2, 9)):
        ry, rx = rng.uniform(0.01, 0.04, 2) * width
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        rows = slice(max(0, int(cy - ry)), min(height, int(cy + ry) + 1))
        cols = slice(max(0, int(cx - rx)), min(width, int(cx + rx) + 1))
        yy, xx = np.ogrid[rows, cols]
        valid[rows, cols] &= np.square((yy - cy) / ry) + np.square((xx - cx) / rx) > 1.0
    return np.where(valid, depth, np.float32(0.0))
