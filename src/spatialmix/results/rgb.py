"""The paper's RGB colouring of spots (a 3-D UMAP scaled to [0, 1]), optionally in a helper process.

Used by :func:`spatialmix.results.iter_write_results` (``X_<key>_rgb``) and by the napari widgets, which turn the
helper process on (:func:`use_umap_process`).
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from spatialmix.errors import ParameterError

_UMAP_EXECUTOR = None


def use_umap_process(enable: bool = True):
    """Run every :func:`rgb_embedding` (UMAP) in one helper process, spawned on first use and kept.

    The napari widgets turn this on. In-process, numba compiling UMAP holds Python's GIL for up to 0.7 s at a
    time (the viewer freezes), and under software OpenGL (Mesa's llvmpipe, e.g. Xvfb) the process holds two
    LLVMs, Mesa's and numba's: compiling in a worker thread while the viewer rendered hung the compilation in
    our tests. A separate process has neither problem. Returns the executor (None when turned off).
    """
    global _UMAP_EXECUTOR
    if enable and _UMAP_EXECUTOR is None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        _UMAP_EXECUTOR = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"))
    elif not enable and _UMAP_EXECUTOR is not None:
        _UMAP_EXECUTOR.shutdown(wait=False, cancel_futures=True)
        _UMAP_EXECUTOR = None
    return _UMAP_EXECUTOR


def rgb_embedding(X, *, n_pcs: int = 50, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """The paper's RGB colouring of spots: a 3D UMAP whose axes, min-max scaled to [0, 1], are R, G, B.

    Runs in the helper process of :func:`use_umap_process` when that is on (same result: same code, same seed).
    """
    kwargs = {"n_pcs": n_pcs, "seed": seed, "n_neighbors": n_neighbors, "min_dist": min_dist}
    if _UMAP_EXECUTOR is not None:
        # the helper gets the PCA (at most n_pcs columns), never the full matrix (e.g. 500 m/z bins per spot);
        # _rgb_embedding does the same PCA itself otherwise, so the colours are the same either way
        return _in_helper(_rgb_embedding, _reduced(np.asarray(X, dtype=np.float32), n_pcs, seed), **kwargs)
    return _rgb_embedding(X, **kwargs)


def _reduced(X: np.ndarray, n_pcs: int, seed: int) -> np.ndarray:
    """``X`` with more than ``n_pcs`` columns as its first principal components (fit on the rows without NaN;
    NaN rows stay NaN), else ``X``: the first step of :func:`_rgb_embedding`."""
    if X.ndim != 2 or X.shape[1] <= int(n_pcs) or int(n_pcs) < 3:
        return X
    ok = np.isfinite(X).all(axis=1)
    n_ok = int(ok.sum())
    if n_ok < 5:
        return X  # _rgb_embedding says what is wrong
    from sklearn.decomposition import PCA

    out = np.full((X.shape[0], min(int(n_pcs), n_ok)), np.nan, np.float32)
    out[ok] = PCA(n_components=out.shape[1], random_state=seed).fit_transform(X[ok]).astype(np.float32)
    return out


#: a helper process that uses no CPU for this long while a task waits is taken as stuck and replaced
HELPER_IDLE_S = 30.0
#: ... "no CPU": less than this many CPU seconds in that time (a busy helper uses most of a core)
HELPER_MIN_CPU_S = 0.3


def _in_helper(fn, *args, attempts: int = 3, **kwargs):
    """Run ``fn(*args, **kwargs)`` in the helper process; replace the helper when it sits idle with a task pending.

    In the GUI tests the helper sometimes never started a task it was given: the executor's pipe was fed, the
    helper waited on it with no CPU used, the result never came (seen 4 times in about 40 widget runs, most on a
    loaded machine; cause not found). Rather than waiting forever, a helper that uses (almost) no CPU for
    :data:`HELPER_IDLE_S` seconds while the task is pending is shut down and the task goes to a fresh one.
    """
    import concurrent.futures as cf

    import psutil

    global _UMAP_EXECUTOR
    for attempt in range(attempts):
        executor = use_umap_process()
        future = executor.submit(fn, *args, **kwargs)
        window_cpu, window_start = None, time.monotonic()
        while True:
            try:
                return future.result(timeout=2.0)
            except cf.TimeoutError:
                pass
            procs = [psutil.Process(pid) for pid in list(getattr(executor, "_processes", {}) or {})]
            try:
                cpu = sum(sum(pr.cpu_times()[:2]) for pr in procs)
            except psutil.Error:
                cpu = None
            if cpu is None or window_cpu is None or cpu - window_cpu > HELPER_MIN_CPU_S:
                window_cpu, window_start = cpu, time.monotonic()  # working (or just started): a new window
            elif time.monotonic() - window_start > HELPER_IDLE_S:
                if attempt + 1 < attempts:
                    warnings.warn(f"the UMAP helper process used no CPU for {HELPER_IDLE_S:.0f} s with a task "
                                  f"pending; starting a new one (attempt {attempt + 2} of {attempts})",
                                  RuntimeWarning, stacklevel=3)
                future.cancel()
                for pr in procs:
                    try:
                        pr.kill()
                    except psutil.Error:
                        pass
                executor.shutdown(wait=False, cancel_futures=True)
                _UMAP_EXECUTOR = None
                break
    from spatialmix.errors import SpatialMixError

    raise SpatialMixError(f"the UMAP helper process did not run the RGB colouring in {attempts} attempts; "
                          "turn the helper off with spatialmix.results.use_umap_process(False) and retry")


def _rgb_embedding(X, *, n_pcs: int = 50, seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1) -> np.ndarray:
    """The paper's RGB colouring of spots: a 3D UMAP whose axes, min-max scaled to [0, 1], are R, G, B.

    Parameters
    ----------
    X
        (n_spots, n_features) values (an embedding or features). Rows containing NaN (e.g. spots without MSI)
        are left out of the fit and come back as NaN rows.
    n_pcs
        ``X`` with more columns is reduced to this many principal components first (for speed).
    seed
        UMAP's (and PCA's) ``random_state``: the same seed gives the same colours.
    n_neighbors, min_dist
        UMAP options (capped to the number of usable rows on tiny data).

    Returns
    -------
    (n_spots, 3) float32 in [0, 1], NaN rows where ``X`` had NaN.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise ParameterError(f"rgb_embedding needs a 2-D (spots x features) matrix, got shape {X.shape}")
    if int(n_pcs) < 3:
        raise ParameterError(f"n_pcs must be >= 3 (the colouring has 3 axes), got {n_pcs!r}")
    if int(n_neighbors) < 2:
        raise ParameterError(f"n_neighbors must be >= 2, got {n_neighbors!r}")
    ok = np.isfinite(X).all(axis=1)
    n_ok = int(ok.sum())
    if n_ok < 5:
        raise ParameterError(
            f"rgb_embedding needs at least 5 spots with finite values, got {n_ok} of {X.shape[0]}; "
            "check that the values are not NaN for (almost) every spot"
        )
    Z = _reduced(X, n_pcs, seed)[ok]
    import umap

    reducer = umap.UMAP(n_components=3, n_neighbors=min(int(n_neighbors), n_ok - 1), min_dist=float(min_dist),
                        random_state=seed)
    with warnings.catch_warnings():  # "n_jobs overridden to 1 by setting random_state": that is the point
        warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*[Ss]pectral initialisation failed.*")
        emb = np.asarray(reducer.fit_transform(Z), dtype=np.float64)
    lo, hi = emb.min(axis=0), emb.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    out = np.full((X.shape[0], 3), np.nan, np.float32)
    out[ok] = np.clip((emb - lo) / span, 0.0, 1.0)
    return out


# ---------------------------------------------------------------------------------------------------------------
