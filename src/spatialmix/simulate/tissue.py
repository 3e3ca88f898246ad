"""Tissue geometry of one simulated section: the Visium spot lattice, the tissue outline, the regions
(noise-warped Voronoi cells carrying tissue classes) and the smooth latent fields, all in the sample's
micrometre frame (the frame of its Visium spots).

Why one file of about 410 lines: it is one construction. :func:`make_tissue` builds a :class:`Tissue` from the
lattice, outline, world grid and class assignment defined above it, all in the one micrometre frame, and
:func:`make_labels` reads the class map of the world it returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from ._config import CLASS_NAMES, CLASSES, SPOT_DIAMETER_UM, SPOT_PITCH_UM, SizeSpec
from ._random import REFERENCE_SEED, rng_for, sigmoid, smooth_noise, upsample_bilinear
from .biology import N_PRIVATE, N_SHARED, Biology

ROW_PITCH_UM = SPOT_PITCH_UM * np.sqrt(3) / 2  # distance between lattice rows


@lru_cache(maxsize=1)
def barcode_whitelist() -> np.ndarray:
    """The 4,992 spot barcodes of a 78 x 64 slide (16-mers + ``-1``), in array position order
    ``index = array_row * 64 + array_col // 2``; the same for every sample, as on real slides."""
    rng = rng_for(REFERENCE_SEED, 3)
    codes: set[str] = set()
    out: list[str] = []
    alphabet = np.array(list("ACGT"))
    while len(out) < 78 * 64:
        for s in ("".join(r) for r in alphabet[rng.integers(0, 4, (78 * 64, 16))]):
            if s not in codes:
                codes.add(s)
                out.append(s)
                if len(out) == 78 * 64:
                    break
    return np.array([s + "-1" for s in out])


@dataclass
class VisiumGeometry:
    """Spot lattice and fullres image frame of one section."""

    mpp_fullres: float  # um per fullres pixel
    fullres_shape: tuple[int, int]  # (rows, cols) of the (not written) fullres image
    spots: pd.DataFrame  # barcode, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres, x_um, y_um
    capture_bounds: tuple[float, float, float, float]  # x0, y0, x1, y1 (um) of the spot lattice
    extent_um: tuple[float, float]  # fullres image width, height in um


def make_visium_geometry(spec: SizeSpec, rng: np.random.Generator) -> VisiumGeometry:
    mpp = float(rng.uniform(0.30, 0.50))
    margin = spec.fullres_margin_um
    rows = np.arange(spec.lattice_rows)
    r, k = np.meshgrid(rows, np.arange(spec.lattice_cols), indexing="ij")
    r = r.ravel()
    c = 2 * k.ravel() + (r % 2)  # array_col, (row + col) even as on real slides
    u = c * SPOT_PITCH_UM / 2
    v = r * ROW_PITCH_UM
    angle = np.deg2rad(rng.uniform(-0.6, 0.6))
    ca, sa = np.cos(angle), np.sin(angle)
    w_um = 2 * margin + u.max()
    h_um = 2 * margin + v.max()
    # rotate the lattice slightly about the capture-area centre, as slides sit in the scanner
    uc, vc = u.max() / 2, v.max() / 2
    x = margin + uc + ca * (u - uc) - sa * (v - vc)
    y = margin + vc + sa * (u - uc) + ca * (v - vc)
    pxl_col = np.round(x / mpp).astype(np.int64)
    pxl_row = np.round(y / mpp).astype(np.int64)
    barcodes = barcode_whitelist()[r * 64 + c // 2]
    spots = pd.DataFrame(
        {
            "barcode": barcodes,
            "array_row": r.astype(np.int64),
            "array_col": c.astype(np.int64),
            "pxl_row_in_fullres": pxl_row,
            "pxl_col_in_fullres": pxl_col,
        }
    )
    spots["x_um"] = spots["pxl_col_in_fullres"] * mpp
    spots["y_um"] = spots["pxl_row_in_fullres"] * mpp
    shape = (int(np.ceil(h_um / mpp)), int(np.ceil(w_um / mpp)))
    bounds = (
        float(spots.x_um.min() - SPOT_PITCH_UM / 2),
        float(spots.y_um.min() - SPOT_PITCH_UM / 2),
        float(spots.x_um.max() + SPOT_PITCH_UM / 2),
        float(spots.y_um.max() + SPOT_PITCH_UM / 2),
    )
    return VisiumGeometry(mpp, shape, spots, bounds, (float(w_um), float(h_um)))


@dataclass
class TissueShape:
    """An irregular tissue outline: a warped ellipse with harmonics, optional satellite fragments,
    and edge roughness from a smooth noise field."""

    cx: float
    cy: float
    R0: float
    aspect: float
    angle: float
    harm_amp: np.ndarray
    harm_phase: np.ndarray
    blobs: np.ndarray  # (k, 3): distance (in R0), direction (rad), radius (in R0)
    edge_um: float  # amplitude of the edge roughness (um), independent of the tissue size

    def rho(self, x: np.ndarray, y: np.ndarray, edge: np.ndarray, R0: float | None = None) -> np.ndarray:
        """Normalised radius; the tissue is where ``rho < 1``."""
        R0 = self.R0 if R0 is None else R0
        dx, dy = x - self.cx, y - self.cy
        ca, sa = np.cos(self.angle), np.sin(self.angle)
        u = (ca * dx + sa * dy) / np.sqrt(self.aspect)
        v = (-sa * dx + ca * dy) * np.sqrt(self.aspect)
        theta = np.arctan2(v, u)
        k = np.arange(1, len(self.harm_amp) + 1)
        logr = (self.harm_amp[:, None] * np.cos(k[:, None] * theta.ravel()[None] - self.harm_phase[:, None])).sum(0)
        rho = np.hypot(u, v) / (R0 * np.exp(logr.reshape(theta.shape)))
        for dist, direction, radius in self.blobs:
            bx = self.cx + R0 * dist * np.cos(direction)
            by = self.cy + R0 * dist * np.sin(direction)
            rho = np.minimum(rho, np.hypot(x - bx, y - by) / (R0 * radius))
        return rho + self.edge_um * edge / R0


@dataclass
class World:
    """Fields of one section on a regular grid in the sample's um frame.

    Pixel ``[i, j]`` of a fine field has its centre at ``(x0 + j * res, y0 + i * res)``; coarse fields
    (``factor`` times coarser) hold the smooth private fields.
    """

    x0: float
    y0: float
    res: float
    shape: tuple[int, int]
    factor: int
    mask: np.ndarray  # soft tissue mask (0..1)
    cls: np.ndarray  # class index (int8), -1 outside the tissue
    cell: np.ndarray  # Voronoi cell index (int16)
    z: np.ndarray  # (N_SHARED, ny, nx) shared latent fields
    tissue: np.ndarray  # mask * (1 - lumen): tissue material present
    morph: dict[str, np.ndarray]  # histology fields: density, radius, aspect, eosin, tint, angle
    private: dict[str, np.ndarray] = field(default_factory=dict)  # coarse (k, cy, cx) per modality

    def index(self, x: np.ndarray, y: np.ndarray, coarse: bool = False) -> tuple[np.ndarray, np.ndarray]:
        if coarse:
            f = self.factor
            # coarse pixel k covers fine pixels k*f .. k*f+f-1; its centre is at fine index k*f + (f-1)/2
            return ((y - self.y0) / self.res - (f - 1) / 2) / f, ((x - self.x0) / self.res - (f - 1) / 2) / f
        return (y - self.y0) / self.res, (x - self.x0) / self.res

    def sample(self, a: np.ndarray, x: np.ndarray, y: np.ndarray, *, order: int = 1, coarse: bool = False,
               cval: float | None = None) -> np.ndarray:
        """Values of field ``a`` ((ny, nx) or (k, ny, nx)) at um positions; returns (..., k) for stacks."""
        r, c = self.index(np.asarray(x, float), np.asarray(y, float), coarse=coarse)
        coords = np.stack([r.ravel(), c.ravel()])
        mode = "nearest" if cval is None else "constant"
        kw = {"order": order, "mode": mode, "cval": 0.0 if cval is None else cval, "prefilter": False}
        if a.ndim == 2:
            return ndi.map_coordinates(a, coords, **kw).reshape(np.shape(x))
        out = np.stack([ndi.map_coordinates(ai, coords, **kw) for ai in a], axis=-1)
        return out.reshape(*np.shape(x), a.shape[0])

    def grid_x(self) -> np.ndarray:
        return (self.x0 + self.res * np.arange(self.shape[1])).astype(np.float32)

    def grid_y(self) -> np.ndarray:
        return (self.y0 + self.res * np.arange(self.shape[0])).astype(np.float32)


def _shape_for(spec: SizeSpec, geom: VisiumGeometry, rng: np.random.Generator, extends: bool) -> TissueShape:
    x0, y0, x1, y1 = geom.capture_bounds
    ccx, ccy = (x0 + x1) / 2, (y0 + y1) / 2
    hx, hy = (x1 - x0) / 2, (y1 - y0) / 2
    if extends:
        psi = rng.uniform(0, 2 * np.pi)
        frac = rng.uniform(*spec.extend_offset)
        cx, cy = ccx + frac * hx * np.cos(psi), ccy + frac * hy * np.sin(psi)
    else:
        cx, cy = ccx + rng.uniform(-0.12, 0.12) * hx, ccy + rng.uniform(-0.12, 0.12) * hy
    n_h = 6
    amps = rng.normal(0, 1, n_h) * 0.16 / np.arange(1, n_h + 1) ** 0.9
    amps[0] *= 0.3
    blobs = []
    if rng.random() < 0.6:
        blobs.append((rng.uniform(1.05, 1.3), rng.uniform(0, 2 * np.pi), rng.uniform(0.12, 0.22)))
    return TissueShape(
        cx=float(cx),
        cy=float(cy),
        R0=1.0,
        aspect=float(rng.uniform(1.0, 1.5)),
        angle=float(rng.uniform(0, np.pi)),
        harm_amp=amps,
        harm_phase=rng.uniform(0, 2 * np.pi, n_h),
        blobs=np.array(blobs).reshape(-1, 3),
        edge_um=float(rng.uniform(40.0, 80.0)),
    )


def _fit_radius(shape: TissueShape, sx, sy, s_edge, target: int, hi: float) -> float:
    lo = 10.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if np.count_nonzero(shape.rho(sx, sy, s_edge, R0=mid) < 1) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass
class Tissue:
    """Tissue of one section: geometry, world fields, per-spot truth."""

    geometry: VisiumGeometry
    shape: TissueShape
    world: World
    extends: bool
    classes_present: tuple[str, ...]
    cell_class: np.ndarray  # class index per Voronoi cell
    seeds: np.ndarray  # (n_cells, 2) Voronoi seeds (um)


def make_tissue(spec: SizeSpec, bio: Biology, index: int, rng_geo: np.random.Generator,
                rng_fields: np.random.Generator) -> Tissue:
    """Build the tissue world of sample ``index`` (about half of the samples extend beyond the capture
    area, along a golden-ratio sequence so that any dataset has both kinds)."""
    geom = make_visium_geometry(spec, rng_geo)
    extends = ((index * 0.6180339887) % 1.0) < 0.5
    w_um, h_um = geom.extent_um
    E = spec.world_extra_um
    res = spec.world_res_um
    f = spec.noise_factor
    nx = int(np.ceil((w_um + 2 * E) / res / f)) * f
    ny = int(np.ceil((h_um + 2 * E) / res / f)) * f
    x0, y0 = -E, -E
    xs = (x0 + res * np.arange(nx)).astype(np.float32)
    ys = (y0 + res * np.arange(ny)).astype(np.float32)
    world = World(x0=x0, y0=y0, res=res, shape=(ny, nx), factor=f, mask=None, cls=None, cell=None, z=None,
                  tissue=None, morph={})

    # --- outline -------------------------------------------------------------------------------
    edge = smooth_noise(rng_fields, (ny, nx), 70.0 / res)[0]
    shape = _shape_for(spec, geom, rng_geo, extends)
    sx, sy = geom.spots.x_um.to_numpy(), geom.spots.y_um.to_numpy()
    s_edge = world.sample(edge, sx, sy)
    target = int(rng_geo.integers(spec.in_tissue_range[0], spec.in_tissue_range[1] + 1))
    # the outline must stay inside the world, leaving room for the H&E and MSI margins
    room = min(shape.cx - x0, x0 + nx * res - shape.cx, shape.cy - y0, y0 + ny * res - shape.cy) - 350.0
    max_r = (room - 3 * shape.edge_um) / (np.sqrt(shape.aspect) * np.exp(np.abs(shape.harm_amp).sum()))
    shape.R0 = _fit_radius(shape, sx, sy, s_edge, target, hi=max(max_r, 50.0))
    X, Y = xs[None, :], ys[:, None]
    rho = shape.rho(np.broadcast_to(X, (ny, nx)), np.broadcast_to(Y, (ny, nx)), edge)
    # anti-aliased mask (about one fine pixel of soft edge)
    mask = np.clip((1 - rho) * shape.R0 / (1.5 * res) + 0.5, 0, 1).astype(np.float32)
    world.mask = mask
    in_tissue = shape.rho(sx, sy, s_edge) < 1
    geom.spots["in_tissue"] = in_tissue.astype(np.int64)

    # --- regions: noise-warped Voronoi cells -----------------------------------------------------
    inside = np.flatnonzero(mask.ravel() > 0.5)
    area = inside.size * res**2
    n_cells = spec.n_regions
    spacing = np.sqrt(area / n_cells)
    cand = inside[rng_fields.permutation(inside.size)[: 40 * n_cells]]
    cand_xy = np.stack([xs[cand % nx], ys[cand // nx]], axis=1)
    seeds: list[np.ndarray] = []
    for min_d in (0.75, 0.6, 0.45, 0.3):
        for p in cand_xy:
            if len(seeds) >= n_cells:
                break
            if not seeds or np.min(np.hypot(*(np.array(seeds) - p).T)) > min_d * spacing:
                seeds.append(p)
    seeds_arr = np.array(seeds, dtype=np.float64)
    cny, cnx = ny // f, nx // f
    coarse = smooth_noise(rng_fields, (cny, cnx), 0.35 * spacing / (res * f), n=2)
    warp = upsample_bilinear(coarse, f, (ny, nx)) * (0.3 * spacing)
    step = 2
    gx = (X + warp[0])[::step, ::step]
    gy = (Y + warp[1])[::step, ::step]
    _, nearest = cKDTree(seeds_arr).query(np.stack([gx.ravel(), gy.ravel()], axis=1))
    cell = np.repeat(np.repeat(nearest.reshape(gx.shape), step, 0), step, 1)[:ny, :nx].astype(np.int16)
    world.cell = cell

    # cells' in-tissue spot counts decide where required classes go (so each shows up in the annotations)
    spot_cell = cell[np.clip(np.round((sy - y0) / res).astype(int), 0, ny - 1),
                     np.clip(np.round((sx - x0) / res).astype(int), 0, nx - 1)]
    counts = np.bincount(spot_cell[in_tissue], minlength=len(seeds_arr))
    present = bio.presence[index]
    cell_class = _assign_classes(rng_fields, counts, present, spec)
    cls = np.where(mask > 0.5, cell_class[cell], -1).astype(np.int8)
    world.cls = cls

    # --- shared latent fields ---------------------------------------------------------------------
    cls0 = np.where(cls >= 0, cls, 0)
    means = bio.class_means  # (C, K)
    z = np.empty((N_SHARED, ny, nx), dtype=np.float32)
    grad_rng = rng_fields.normal(0, 0.9 / spacing, (len(seeds_arr), 2, N_SHARED)).astype(np.float32)
    noise = upsample_bilinear(smooth_noise(rng_fields, (cny, cnx), 250.0 / (res * f), n=N_SHARED), f, (ny, nx))
    dxc = (X - seeds_arr[cell, 0]).astype(np.float32)
    dyc = (Y - seeds_arr[cell, 1]).astype(np.float32)
    for k in range(N_SHARED):
        zk = means[cls0, k]
        zk += grad_rng[cell, 0, k] * dxc + grad_rng[cell, 1, k] * dyc
        zk += 0.55 * noise[k]
        z[k] = zk
    world.z = z
    del dxc, dyc, noise

    # private fields per modality (coarse grids; sampled bilinearly)
    for mod, n in N_PRIVATE.items():
        world.private[mod] = smooth_noise(rng_fields, (cny, cnx), 350.0 / (res * f), n=n)

    # --- histology fields ----------------------------------------------------------------------
    lumen_noise = smooth_noise(rng_fields, (ny, nx), 22.0 / res)[0]
    thr = np.array([c.lumen_threshold for c in CLASSES], dtype=np.float32)[cls0]
    lumen = np.where(cls >= 0, sigmoid((lumen_noise - thr) / 0.05), 0).astype(np.float32)
    lining = np.where(np.isfinite(thr), np.exp(-(((lumen_noise - thr + 0.3) / 0.22) ** 2)), 0).astype(np.float32)
    world.tissue = (mask * (1 - lumen)).astype(np.float32)
    he_priv = upsample_bilinear(world.private["he"], f, (ny, nx))
    inp = np.concatenate([z, he_priv], axis=0).reshape(N_SHARED + N_PRIVATE["he"], -1).T
    mod = np.tanh(bio.he_net(inp)).T.reshape(4, ny, nx)
    prior = {k: np.array([getattr(c, k) for c in CLASSES], dtype=np.float32)[cls0]
             for k in ("density", "radius_um", "aspect", "eosin", "tint")}
    angle_noise = upsample_bilinear(smooth_noise(rng_fields, (cny, cnx), 120.0 / (res * f)), f, (ny, nx))[0]
    world.morph = {
        "density": prior["density"] * np.exp(0.35 * mod[0]) * (1 + 1.3 * lining),
        "radius": prior["radius_um"] * np.exp(0.12 * mod[1]),
        "aspect": prior["aspect"],
        "eosin": prior["eosin"] * np.exp(0.25 * mod[2]),
        "tint": prior["tint"] * np.exp(0.35 * mod[3]),
        "angle": (np.pi * angle_noise).astype(np.float32),
    }
    return Tissue(geom, shape, world, extends, present, cell_class, seeds_arr)


def _assign_classes(rng: np.random.Generator, counts: np.ndarray, present: tuple[str, ...],
                    spec: SizeSpec) -> np.ndarray:
    """Class index per Voronoi cell: every present class gets at least one cell with in-tissue spots
    (the rare nerve the smallest such cell); remaining cells are drawn by class weight."""
    n = len(counts)
    idx = {name: i for i, name in enumerate(CLASS_NAMES)}
    out = np.full(n, -1, dtype=np.int64)
    min_spots = max(8, int(0.02 * spec.in_tissue_range[0]))
    usable = [c for c in np.argsort(counts) if counts[c] >= min_spots]
    if not usable:
        usable = list(np.argsort(counts)[::-1][:1])
    required = [p for p in present if p != "Stroma"]
    if "Nerve" in required:
        out[usable[0]] = idx["Nerve"]
        usable = usable[1:]
        required.remove("Nerve")
    order = rng.permutation(len(usable))
    for name, j in zip(required, order):
        out[usable[j]] = idx[name]
    weights = np.array([CLASSES[idx[p]].weight for p in present], dtype=float)
    free = np.flatnonzero(out < 0)
    if weights.sum() > 0 and free.size:
        choice = rng.choice(len(present), size=free.size, p=weights / weights.sum())
        out[free] = [idx[present[k]] for k in choice]
    # make sure stroma exists in tissue
    if idx["Stroma"] not in out[counts > 0] and free.size:
        out[free[np.argmax(counts[free])]] = idx["Stroma"]
    return out


def spot_subpoints(x: np.ndarray, y: np.ndarray, radius: float = SPOT_DIAMETER_UM / 3) -> tuple[np.ndarray, np.ndarray]:
    """Seven points covering a spot disc (centre + hexagon), as (n, 7) arrays."""
    ang = np.deg2rad(np.arange(0, 360, 60))
    ox = np.concatenate([[0.0], radius * np.cos(ang)])
    oy = np.concatenate([[0.0], radius * np.sin(ang)])
    return x[:, None] + ox[None], y[:, None] + oy[None]


def make_labels(tissue: Tissue, rng: np.random.Generator, *, flip_border: float = 0.15,
                unlabelled: float = 0.10) -> tuple[np.ndarray, np.ndarray]:
    """True region and annotated label per spot (empty string off tissue / unlabelled).

    Border spots (another class within 45 um of the centre) get the neighbouring class with probability
    ``flip_border``; ``unlabelled`` of the in-tissue spots stay unannotated.
    """
    w = tissue.world
    spots = tissue.geometry.spots
    sx, sy = spots.x_um.to_numpy(), spots.y_um.to_numpy()
    inside = spots.in_tissue.to_numpy().astype(bool)
    c_centre = w.sample(w.cls.astype(np.float32), sx, sy, order=0, cval=-1).astype(int)
    # spots whose centre falls on a class-less pixel (mask edge) take the nearest cell's class
    cell_c = tissue.cell_class[w.sample(w.cell.astype(np.float32), sx, sy, order=0).astype(int)]
    c_centre = np.where(c_centre >= 0, c_centre, cell_c)
    ang = np.deg2rad(np.arange(0, 360, 45))
    rx = sx[:, None] + 45 * np.cos(ang)[None]
    ry = sy[:, None] + 45 * np.sin(ang)[None]
    ring = w.sample(w.cls.astype(np.float32), rx, ry, order=0, cval=-1).astype(int)
    names = np.array(CLASS_NAMES + ("",), dtype=object)
    region = np.where(inside, names[c_centre], "")
    label = region.copy()
    for i in np.flatnonzero(inside):
        other = ring[i][(ring[i] >= 0) & (ring[i] != c_centre[i])]
        if other.size and rng.random() < flip_border:
            label[i] = names[rng.choice(other)]
    drop = inside & (rng.random(len(spots)) < unlabelled)
    label[drop] = ""
    return region.astype(str), label.astype(str)
