"""Vectorised plane geometry used by the MSI -> spot aggregation.

Exact area of the intersection of a disk and convex polygons, for many (disk, polygon) pairs at once.
No library we depend on offers this vectorised (shapely would need one Python object per pair and is ~100x
slower for the ~10^5-10^7 pairs of a section), so it is written here in plain numpy.
"""

from __future__ import annotations

import numpy as np


def _segment_disk_area(ax, ay, bx, by, r):
    """Signed area of (disk of radius ``r`` at the origin) ∩ (triangle origin, a, b), elementwise.

    The segment a->b is split where it crosses the circle: the parts outside the circle contribute circular
    sectors (r^2/2 * signed angle), the part inside contributes the triangle with the origin. All inputs are
    arrays of the same shape (``r`` may broadcast).
    """
    dx, dy = bx - ax, by - ay
    qa = dx * dx + dy * dy
    qb = ax * dx + ay * dy
    qc = ax * ax + ay * ay - r * r
    disc = qb * qb - qa * qc
    hit = (disc > 0) & (qa > 0)
    sq = np.sqrt(np.where(hit, disc, 0.0))
    safe_qa = np.where(qa > 0, qa, 1.0)
    t1 = np.where(hit, (-qb - sq) / safe_qa, 1.0)
    t2 = np.where(hit, (-qb + sq) / safe_qa, 1.0)
    t1 = np.clip(t1, 0.0, 1.0)
    t2 = np.clip(t2, 0.0, 1.0)
    p1x, p1y = ax + t1 * dx, ay + t1 * dy
    p2x, p2y = ax + t2 * dx, ay + t2 * dy

    def sector(ux, uy, vx, vy):
        return 0.5 * r * r * np.arctan2(ux * vy - uy * vx, ux * vx + uy * vy)

    return sector(ax, ay, p1x, p1y) + 0.5 * (p1x * p2y - p1y * p2x) + sector(p2x, p2y, bx, by)


def disk_polygon_area(vx: np.ndarray, vy: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    """Exact area of disk ∩ convex polygon for many pairs.

    Parameters
    ----------
    vx, vy
        ``(n_pairs, n_vertices)`` polygon vertices **relative to the disk centre**, in order (either
        orientation).
    r
        Disk radius, scalar or ``(n_pairs,)``.

    Returns
    -------
    ``(n_pairs,)`` intersection areas (same units squared).
    """
    vx = np.asarray(vx, dtype=float)
    vy = np.asarray(vy, dtype=float)
    r = np.asarray(r, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    bx = np.roll(vx, -1, axis=1)
    by = np.roll(vy, -1, axis=1)
    total = _segment_disk_area(vx, vy, bx, by, r).sum(axis=1)
    return np.abs(total)


def disk_polygon_area_supersampled(vx: np.ndarray, vy: np.ndarray, r: np.ndarray | float, n: int) -> np.ndarray:
    """Approximate disk ∩ parallelogram area by counting ``n x n`` sample points inside the disk.

    ``vx, vy`` are ``(n_pairs, 4)`` parallelogram corners relative to the disk centre, in the order
    (-,-), (+,-), (+,+), (-,+) of the pixel's index axes; points sit at the centres of an ``n x n`` grid of
    sub-pixels.
    """
    vx = np.asarray(vx, dtype=float)
    vy = np.asarray(vy, dtype=float)
    r = np.asarray(r, dtype=float)
    if r.ndim == 1:
        r = r[:, None]
    u = (np.arange(n) + 0.5) / n  # fractions along the two pixel edges
    uu, vv = np.meshgrid(u, u, indexing="xy")
    uu, vv = uu.ravel()[None, :], vv.ravel()[None, :]
    ox, oy = vx[:, :1], vy[:, :1]
    ex, ey = vx[:, 1:2] - ox, vy[:, 1:2] - oy  # first edge (index x)
    fx, fy = vx[:, 3:4] - ox, vy[:, 3:4] - oy  # second edge (index y)
    px = ox + uu * ex + vv * fx
    py = oy + uu * ey + vv * fy
    inside = (px * px + py * py) <= r * r
    area = np.abs(ex * fy - ey * fx)[:, 0]
    return inside.mean(axis=1) * area
