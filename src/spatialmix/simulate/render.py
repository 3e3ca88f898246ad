"""Render H&E-stained images of a simulated section (the standalone H&E slide and the Visium images).

A Beer-Lambert stain model: optical density = eosin OD x eosin colour + hematoxylin OD x hematoxylin colour,
RGB = 255 exp(-OD). Eosin stains stroma/cytoplasm (smooth fields plus a fibre texture), hematoxylin the
nuclei (ellipses whose density, size and shape follow the tissue fields) and a little of the cytoplasm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._random import upsample_bilinear
from .tissue import World

EOSIN = np.array([0.072, 0.990, 0.105])
HEMATOXYLIN = np.array([0.650, 0.704, 0.286])


@dataclass
class Stain:
    """Per-slide staining: stain colours (unit OD vectors), gains and the glass background."""

    eosin: np.ndarray
    hema: np.ndarray
    eosin_gain: float
    hema_gain: float
    background: np.ndarray  # OD of the empty slide per channel

    @classmethod
    def random(cls, rng: np.random.Generator) -> Stain:
        e = np.clip(EOSIN + rng.normal(0, 0.05, 3), 0.02, None)
        h = np.clip(HEMATOXYLIN + rng.normal(0, 0.06, 3), 0.05, None)
        return cls(
            eosin=e / np.linalg.norm(e),
            hema=h / np.linalg.norm(h),
            eosin_gain=float(rng.uniform(0.75, 1.3)),
            hema_gain=float(rng.uniform(0.75, 1.3)),
            background=np.clip(rng.normal(0.025, 0.01, 3), 0.0, 0.06),
        )


def _affine_to_world(world: World, px_to_um: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrix/offset for ``ndi.affine_transform``: coarse image index (row, col) -> world index (row, col)."""
    # coarse (r, c) -> image (col, row) = (k c + (k-1)/2, k r + (k-1)/2)
    C = np.array([[0, k, (k - 1) / 2], [k, 0, (k - 1) / 2], [0, 0, 1]], dtype=float)
    # um -> world (row, col)
    Wm = np.array([[0, 1 / world.res, -world.y0 / world.res], [1 / world.res, 0, -world.x0 / world.res], [0, 0, 1]])
    M = Wm @ px_to_um @ C
    return M[:2, :2], M[:2, 2]


def _nuclei(rng, coarse: dict[str, np.ndarray], k: int, mpp: float, shape: tuple[int, int]):
    """Poisson nuclei on the coarse grid -> positions (image px), semi-axes (px), orientation, darkness."""
    area = (k * mpp) ** 2 / 1000.0  # coarse cell area in units of 1000 um^2
    lam = coarse["density"] * coarse["tissue"] * area
    counts = rng.poisson(np.clip(lam, 0, None)).ravel()
    cells = np.repeat(np.arange(counts.size), counts)
    n = cells.size
    ci, cj = np.divmod(cells, coarse["tissue"].shape[1])
    y = ci * k - 0.5 + rng.random(n) * k
    x = cj * k - 0.5 + rng.random(n) * k
    keep = (y > -0.5) & (y < shape[0] - 0.5) & (x > -0.5) & (x < shape[1] - 0.5)
    cells, x, y = cells[keep], x[keep], y[keep]
    n = cells.size
    radius = coarse["radius"].ravel()[cells] * np.exp(rng.normal(0, 0.12, n)) / mpp
    aspect = np.maximum(1.0, coarse["aspect"].ravel()[cells] * np.exp(rng.normal(0, 0.1, n)))
    a = radius * np.sqrt(aspect)
    b = radius / np.sqrt(aspect)
    theta = coarse["angle"].ravel()[cells] + rng.normal(0, 0.25, n)
    dark = rng.uniform(0.8, 1.2, n)
    return x, y, a, b, theta, dark


def _splat(shape: tuple[int, int], x, y, a, b, theta, weight, chunk: int = 40000) -> np.ndarray:
    """Accumulate soft-edged filled ellipses into a float image (np.bincount over stamp pixels)."""
    H, W = shape
    out = np.zeros(H * W, dtype=np.float64)
    if x.size == 0:
        return out.reshape(shape).astype(np.float32)
    half = int(np.ceil(np.max(a))) + 1
    off = np.arange(-half, half + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    oy, ox = oy.ravel()[None], ox.ravel()[None]
    for s in range(0, x.size, chunk):
        sl = slice(s, s + chunk)
        xi, yi = np.round(x[sl]).astype(np.int64), np.round(y[sl]).astype(np.int64)
        px, py = xi[:, None] + ox, yi[:, None] + oy
        dx, dy = px - x[sl, None], py - y[sl, None]
        c, sn = np.cos(theta[sl])[:, None], np.sin(theta[sl])[:, None]
        u = (c * dx + sn * dy) / a[sl, None]
        v = (-sn * dx + c * dy) / b[sl, None]
        q = np.sqrt(u * u + v * v)
        val = np.clip((1 - q) * np.maximum(b[sl, None], 0.5) + 0.5, 0, 1) * weight[sl, None]
        ok = (px >= 0) & (px < W) & (py >= 0) & (py < H) & (val > 0)
        out += np.bincount((py * W + px)[ok], weights=val[ok], minlength=H * W)
    return out.reshape(shape).astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], mpp: float, tile: int = 256) -> np.ndarray:
    """Fibrous eosin texture (a random tile, repeated with a random offset)."""
    t = rng.standard_normal((tile, tile)).astype(np.float32)
    s = max(0.6, 1.6 / mpp)
    t = ndi.gaussian_filter(t, (0.4 * s, 1.8 * s), mode="wrap") + 0.5 * ndi.gaussian_filter(t, 0.5 * s, mode="wrap")
    t /= t.std() + 1e-6
    reps = (shape[0] // tile + 2, shape[1] // tile + 2)
    oy, ox = rng.integers(0, tile, 2)
    return np.tile(t, reps)[oy : oy + shape[0], ox : ox + shape[1]]


def render_histology(
    world: World,
    px_to_um: np.ndarray,
    shape: tuple[int, int],
    rng: np.random.Generator,
    stain: Stain,
    *,
    coarse_um: float = 8.0,
) -> np.ndarray:
    """Render the tissue seen through the pixel grid ``px_to_um`` (3x3, (col, row, 1) -> um).

    Returns an (H, W, 3) uint8 RGB image on a white background.
    """
    H, W = shape
    mpp = float(np.sqrt(abs(np.linalg.det(px_to_um[:2, :2]))))
    k = max(1, int(round(coarse_um / mpp)))
    cshape = (int(np.ceil(H / k)), int(np.ceil(W / k)))
    M, off = _affine_to_world(world, px_to_um, k)
    fields = {"tissue": world.tissue, **world.morph}
    coarse = {}
    for name, a in fields.items():
        order = 0 if name in ("aspect", "angle") else 1
        coarse[name] = ndi.affine_transform(a, M, off, output_shape=cshape, order=order, mode="constant",
                                            cval=0.0, prefilter=False)
    # nuclei
    x, y, a, b, theta, dark = _nuclei(rng, coarse, k, mpp, shape)
    nuc = _splat(shape, x, y, a, b, theta, dark)
    # smooth stains at coarse resolution, then up to full resolution
    t = coarse["tissue"]
    eos = upsample_bilinear(np.stack([coarse["eosin"] * t, coarse["tint"] * t]), k, (H, W))
    tex = _texture(rng, shape, mpp)
    e_od = eos[0] * (1 + 0.28 * tex) * stain.eosin_gain
    h_od = (eos[1] + 1.15 * np.minimum(nuc, 1.6)) * stain.hema_gain
    rgb = np.empty((H, W, 3), dtype=np.uint8)
    for ch in range(3):
        od = e_od * np.float32(stain.eosin[ch]) + h_od * np.float32(stain.hema[ch]) + np.float32(stain.background[ch])
        np.multiply(np.exp(-od), 255.0, out=od)
        rgb[..., ch] = np.clip(od + 0.5, 0, 255).astype(np.uint8)
    return rgb
