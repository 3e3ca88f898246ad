"""Shared pytest fixtures. Each section below is owned by one part of the code base; add new fixtures in a
section of their own."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# ============================================================================================================
# Project fixtures (sample data, demo run, prepared project): defined in tests/_project_fixtures.py
# ============================================================================================================
from _project_fixtures import *  # noqa: E402,F401,F403

# ============================================================================================================
# Real Visium data (spatialmix.io tests): Seurat's Space Ranger test folder from Debian's r-cran-seurat
# ============================================================================================================
SEURAT_VISIUM_SUBDIR = Path("usr/share/doc/r-cran-seurat/tests/testdata/visium")
SEURAT_CACHE = Path(os.environ.get("SPATIALMIX_TEST_CACHE", Path.home() / ".cache" / "spatialmix-tests"))


def _seurat_visium_folder() -> tuple[Path | None, str]:
    """The Seurat Visium test folder: installed, cached, or downloaded with apt-get into the cache."""
    installed = Path("/") / SEURAT_VISIUM_SUBDIR
    if (installed / "spatial").is_dir():
        return installed, ""
    extracted = SEURAT_CACHE / "r-cran-seurat" / SEURAT_VISIUM_SUBDIR
    if (extracted / "spatial").is_dir():
        return extracted, ""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None, "apt-get/dpkg are not available to fetch Debian's r-cran-seurat test data"
    SEURAT_CACHE.mkdir(parents=True, exist_ok=True)

    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", "r-cran-seurat"], cwd=SEURAT_CACHE, capture_output=True,
                              text=True, timeout=300)

    debs = sorted(SEURAT_CACHE.glob("r-cran-seurat_*.deb"))
    if not debs:
        result = download()
        if result.returncode != 0:  # stale package lists: refresh once, then retry
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=300)
            result = download()
        debs = sorted(SEURAT_CACHE.glob("r-cran-seurat_*.deb"))
        if result.returncode != 0 or not debs:
            return None, f"apt-get download r-cran-seurat failed: {(result.stderr or result.stdout).strip()[-300:]}"
    target = SEURAT_CACHE / "r-cran-seurat"
    unpack = subprocess.run(["dpkg", "-x", str(debs[-1]), str(target)], capture_output=True, text=True, timeout=300)
    if unpack.returncode != 0 or not (extracted / "spatial").is_dir():
        return None, f"dpkg -x {debs[-1].name} did not give {SEURAT_VISIUM_SUBDIR}: {unpack.stderr.strip()[-300:]}"
    return extracted, ""


@pytest.fixture(scope="session")
def seurat_visium() -> Path:
    """Real Space Ranger output (mouse brain, 2,695 spots, first 100 genes, real low-res H&E) shipped by
    Debian's ``r-cran-seurat``: ``filtered_feature_bc_matrix.h5.gz``, ``spatial/tissue_positions_list.csv.gz``
    (no header), ``spatial/scalefactors_json.json``, ``spatial/tissue_lowres_image.png`` (no hires image)."""
    folder, reason = _seurat_visium_folder()
    if folder is None:
        pytest.skip(f"Real Visium test data unavailable: {reason}")
    return folder


# ============================================================================================================
# imzML from another writer (spatialmix.io tests): R MALDIquantForeign's example files from Debian's
# r-cran-maldiquantforeign (binary-array settings written inline, no referenceableParamGroup)
# ============================================================================================================
MALDIQUANT_SUBDIR = Path("usr/lib/R/site-library/MALDIquantForeign/exampledata")


def _maldiquant_folder() -> tuple[Path | None, str]:
    """The MALDIquantForeign example data folder: installed, cached, or downloaded with apt-get into the cache."""
    package = "r-cran-maldiquantforeign"
    installed = Path("/") / MALDIQUANT_SUBDIR
    if (installed / "tiny_continuous.imzML").is_file():
        return installed, ""
    extracted = SEURAT_CACHE / package / MALDIQUANT_SUBDIR
    if (extracted / "tiny_continuous.imzML").is_file():
        return extracted, ""
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None, f"apt-get/dpkg are not available to fetch Debian's {package} example data"
    SEURAT_CACHE.mkdir(parents=True, exist_ok=True)

    def download() -> subprocess.CompletedProcess:
        return subprocess.run(["apt-get", "download", package], cwd=SEURAT_CACHE, capture_output=True, text=True,
                              timeout=300)

    debs = sorted(SEURAT_CACHE.glob(f"{package}_*.deb"))
    if not debs:
        result = download()
        if result.returncode != 0:  # stale package lists: refresh once, then retry
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=300)
            result = download()
        debs = sorted(SEURAT_CACHE.glob(f"{package}_*.deb"))
        if result.returncode != 0 or not debs:
            return None, f"apt-get download {package} failed: {(result.stderr or result.stdout).strip()[-300:]}"
    unpack = subprocess.run(["dpkg", "-x", str(debs[-1]), str(SEURAT_CACHE / package)], capture_output=True,
                            text=True, timeout=300)
    if unpack.returncode != 0 or not (extracted / "tiny_continuous.imzML").is_file():
        return None, f"dpkg -x {debs[-1].name} did not give {MALDIQUANT_SUBDIR}: {unpack.stderr.strip()[-300:]}"
    return extracted, ""


@pytest.fixture(scope="session")
def maldiquant_exampledata() -> Path:
    """R MALDIquantForeign's example folder: ``tiny_continuous.imzML`` and ``tiny_processed.imzML`` (+ .ibd),
    two 5-peak spectra at pixels (1, 1) and (2, 1), written with inline binary-array cvParams."""
    folder, reason = _maldiquant_folder()
    if folder is None:
        pytest.skip(f"MALDIquantForeign example data unavailable: {reason}")
    return folder


# ============================================================================================================
# Torch threads and deterministic mode of every test, and the claim tests' seed (tests/_claims.py)
# ============================================================================================================
@pytest.fixture(autouse=True)
def _torch_threads():
    """Every test runs torch with ``OMP_NUM_THREADS`` threads (1 in ``make test``) and, with
    ``SPATIALMIX_DETERMINISTIC=1``, deterministic algorithms (benchmarks/claim_spread.py measures both)."""
    import _claims

    _claims.set_torch_threads()
