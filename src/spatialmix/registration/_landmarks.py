"""Landmark-based transforms and the error measure the tests use."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spatialmix.errors import RegistrationError

KINDS = ("similarity", "affine")


@dataclass
class LandmarkFit:
    """Least-squares transform fitted to point pairs.

    Attributes
    ----------
    matrix
        3x3 homogeneous matrix mapping moving ``[x, y, 1]`` to fixed ``[x, y, 1]``.
    rms
        Root-mean-square distance (fixed units, i.e. micrometres for the sample frame) between the fixed
        points and the transformed moving points.
    residuals
        Per-pair distance, same units as ``rms``.
    kind
        ``"similarity"`` or ``"affine"``.
    """

    matrix: np.ndarray
    rms: float
    residuals: np.ndarray
    kind: str = "similarity"
    n: int = field(init=False)

    def __post_init__(self) -> None:
        self.n = int(len(self.residuals))


def check_kind(kind: str) -> str:
    """Return ``kind`` or raise :class:`~spatialmix.errors.ParameterError` naming the allowed values."""
    from spatialmix.errors import ParameterError

    if kind not in KINDS:
        raise ParameterError(f"kind must be one of {KINDS}, got {kind!r}")
    return kind


def _as_points(xy, name: str) -> np.ndarray:
    try:
        arr = np.asarray(xy, dtype=float)
    except (TypeError, ValueError):
        raise RegistrationError(f"{name} must be an (n, 2) array of (x, y) coordinates, got {xy!r}") from None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise RegistrationError(
            f"{name} must be an (n, 2) array of (x, y) coordinates, got an array of shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        bad = np.flatnonzero(~np.all(np.isfinite(arr), axis=1))
        raise RegistrationError(
            f"{name} contains NaN or infinite coordinates (rows {bad.tolist()[:10]}); "
            "remove or fix those landmarks"
        )
    return arr


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homogeneous matrix to (n, 2) points."""
    xy = np.asarray(xy, dtype=float)
    m = np.asarray(matrix, dtype=float)
    return xy @ m[:2, :2].T + m[:2, 2]


def fit_landmarks(moving_xy, fixed_xy, *, kind: str = "similarity") -> LandmarkFit:
    """Fit a similarity or affine transform moving -> fixed to landmark pairs (least squares).

    Parameters
    ----------
    moving_xy
        (n, 2) points ``(x, y)`` in the moving frame (e.g. MSI or H&E pixel coordinates, x = column).
    fixed_xy
        (n, 2) corresponding points in the fixed frame (the sample's micrometre frame).
    kind
        ``"similarity"`` (rotation, one scale, translation; 4 parameters) or ``"affine"`` (6 parameters).

    Returns
    -------
    LandmarkFit
        ``matrix`` (3x3, moving -> fixed), ``rms`` and per-pair ``residuals`` in fixed units.

    Raises
    ------
    RegistrationError
        Fewer than 3 pairs, different numbers of moving and fixed points, NaN coordinates, or points
        that are (nearly) collinear or coincident so the transform is not determined.
    """
    from skimage.transform import AffineTransform, SimilarityTransform

    check_kind(kind)
    mov = _as_points(moving_xy, "moving_xy")
    fix = _as_points(fixed_xy, "fixed_xy")
    if len(mov) != len(fix):
        raise RegistrationError(
            f"moving_xy has {len(mov)} points but fixed_xy has {len(fix)}; give the same landmarks, "
            "in the same order, in both frames"
        )
    if len(mov) < 3:
        raise RegistrationError(
            f"{len(mov)} landmark pair(s) given; at least 3 non-collinear pairs are needed to fit a "
            f"{kind} transform"
        )
    for name, pts in (("moving_xy", mov), ("fixed_xy", fix)):
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[0] <= 0 or sv[1] <= 1e-6 * sv[0]:
            raise RegistrationError(
                f"the {len(pts)} points of {name} are collinear or coincident, so the transform is not "
                "determined; at least 3 non-collinear pairs are needed (spread the landmarks over the tissue)"
            )
    cls = SimilarityTransform if kind == "similarity" else AffineTransform
    if hasattr(cls, "from_estimate"):  # scikit-image >= 0.26
        tf = cls.from_estimate(mov, fix)
        ok = bool(tf)
    else:  # pragma: no cover - older scikit-image
        tf = cls()
        ok = tf.estimate(mov, fix)
    matrix = np.asarray(getattr(tf, "params", np.full((3, 3), np.nan)), dtype=float) if ok else None
    if not ok or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix[:2, :2])) < 1e-12:
        raise RegistrationError(
            f"could not fit a {kind} transform to the {len(mov)} landmark pairs (degenerate configuration); "
            "use at least 3 non-collinear pairs spread over the tissue"
        )
    residuals = np.linalg.norm(apply_matrix(matrix, mov) - fix, axis=1)
    rms = float(np.sqrt(np.mean(residuals**2)))
    return LandmarkFit(matrix=matrix, rms=rms, residuals=residuals, kind=kind)


def transform_error_um(matrix_est, matrix_true, points_um) -> float:
    """RMS distance (um) between where the estimated and the true transform put the same moving points.

    For each point ``p`` in the sample frame (e.g. in-tissue spot centres) this is
    ``|A_est(A_true^-1 p) - p|``; the result is the RMS over the points.

    Parameters
    ----------
    matrix_est, matrix_true
        3x3 moving -> sample matrices.
    points_um
        (n, 2) points ``(x, y)`` in the sample frame (micrometres).
    """
    pts = np.asarray(points_um, dtype=float).reshape(-1, 2)
    if len(pts) == 0:
        raise RegistrationError("transform_error_um needs at least one point to measure the error at")
    moving = apply_matrix(np.linalg.inv(np.asarray(matrix_true, dtype=float)), pts)
    d = apply_matrix(matrix_est, moving) - pts
    return float(np.sqrt(np.mean(np.sum(d**2, axis=1))))
