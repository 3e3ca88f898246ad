"""Reading and merging samples: read every sample, register, build the per-spot tables (the layer below the
jobs of :mod:`spatialmix.jobs`).

Everything here is written once as a generator of :class:`~spatialmix.progress.Progress` events (run by the
napari widgets in a worker thread, by scripts and the CLI through :func:`spatialmix.progress.run`).
"""

from __future__ import annotations

import platform
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import AfterValidator

from spatialmix.conventions import ANNOTATION_KEY, MODALITY_TABLES, SAMPLE_ELEMENTS  # noqa: F401 - re-exported
from spatialmix.errors import ParameterError
from spatialmix.params import Params, param
from spatialmix.progress import Progress, ProgressGen, forward, run
from spatialmix.samples import SampleSpec, bundled_sample_data, read_samples_csv  # noqa: F401 - re-exported


def _merge_attrs(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_attrs(target[key], value)
        else:
            target[key] = value


def check_visium_bin(spec: SampleSpec) -> None:
    """Raise :class:`ParameterError` when ``spec.visium_bin_um`` is given for a Visium (not HD) folder or names a
    bin size the Visium HD output does not have."""
    from spatialmix.io.visium_hd import bin_size_problem

    if spec.visium_bin_um is not None and (problem := bin_size_problem(spec.visium, spec.visium_bin_um)):
        raise ParameterError(f"sample {spec.sample}: visium_bin_um={spec.visium_bin_um:g}: {problem[0]}. {problem[1]}")


def iter_read_sample(spec: SampleSpec, *, bin_ppm: float = 20.0, mz_range=None, annotation_key=ANNOTATION_KEY):
    """Read one sample's files into a SpatialData (no registration yet)."""
    from spatialmix import io as smio

    yield Progress(f"read Visium {spec.sample}", 0, 1, str(spec.visium))
    check_visium_bin(spec)
    bin_um = None if spec.visium_bin_um is None else int(spec.visium_bin_um)  # one of the folder's sizes (checked)
    sdata = smio.read_visium(spec.visium, sample=spec.sample, patient=spec.patient, bin_size_um=bin_um)
    yield Progress(f"read Visium {spec.sample}", 1, 1, f"{sdata.tables['rna'].n_obs} spots")
    parts = []
    if spec.imzml is not None:
        parts.append(
            (
                yield from forward(
                    smio.iter_read_imzml(
                        spec.imzml,
                        sample=spec.sample,
                        pixel_size_um=spec.msi_pixel_size_um,
                        bin_ppm=bin_ppm,
                        mz_range=mz_range,
                    )
                )
            )
        )
    if spec.he is not None:
        parts.append(
            (
                yield from forward(
                    smio.iter_read_histology(spec.he, sample=spec.sample, microns_per_pixel=spec.he_microns_per_pixel)
                )
            )
        )
    for part in parts:
        for name, el in part.images.items():
            sdata.images[name] = el
        for name, el in part.tables.items():
            sdata.tables[name] = el
        _merge_attrs(sdata.attrs, dict(part.attrs))
    if spec.annotations is not None:
        labels = smio.read_annotations(spec.annotations)
        smio.add_annotations(sdata, spec.sample, labels, table="rna", key=annotation_key, path=spec.annotations)
    return sdata


def _concat_tables(tables: list, regions: list[str]):
    """Concatenate per-sample AnnData tables (outer join on features, zeros where a feature is absent)."""
    import anndata as ad
    from spatialdata.models import TableModel

    for t in tables:
        t.uns.pop(TableModel.ATTRS_KEY, None)
    merged = ad.concat(tables, join="outer", merge="same", uns_merge="first", fill_value=0)
    merged.obs["region"] = pd.Categorical(merged.obs["region"].astype(str), categories=regions)
    return TableModel.parse(merged, region=regions, region_key="region", instance_key="spot_id")


def normalize_rna(table, *, target_sum: float = 1e4) -> None:
    """Total-count normalise and log1p the ``rna`` table in place; raw counts stay in ``layers["counts"]``."""
    import scanpy as sc

    if "counts" not in table.layers:
        table.layers["counts"] = table.X.copy()
    table.X = table.layers["counts"].astype(np.float32, copy=True)
    sc.pp.normalize_total(table, target_sum=target_sum)
    sc.pp.log1p(table)
    table.uns["spatialmix_normalization"] = {"method": "normalize_total+log1p", "target_sum": target_sum}


def _mz_window(v: list[float] | None):
    if v is not None and not (len(v) == 2 and 0 < v[0] < v[1]):
        raise ValueError("must be a list [low, high] of two m/z values with 0 < low < high")
    return v


# ``register`` is iter_prepare's keyword (and the [prepare] key users write); pydantic warns that it shadows
# ABCMeta.register, which no one calls on a parameter declaration
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"')

    class PrepareParams(Params):
        """The options of :func:`iter_prepare`, declared once (``spatialmix.params``): ``iter_prepare`` checks its
        arguments with it before any reading, ``[prepare]`` of a run configuration and ``docs/config.md`` follow it."""

        register: bool = param(True, "automatic registration of MSI and H&E onto the Visium spots (`false`: the "
                               "nominal pixel sizes)")
        bin_ppm: float = param(20.0, "m/z bin width in ppm, the same grid for every sample", gt=0)
        mz_range: Annotated[list[float] | None, AfterValidator(_mz_window)] = param(
            None, "keep only this m/z window", kind="`[low, high]`, 0 < low < high", default_text="all",
            fix="For example mz_range = [400.0, 1000.0]; leave it out to keep every m/z")
        morphology: bool = param(True, "compute per-spot H&E features (the `morphology` table)")
        morphology_encoder: str | Path | None = param(
            None, "TorchScript image encoder checkpoint for the H&E features", kind="path",
            default_text="built-in image features")
        min_msi_coverage: float = param(0.5, "spots covered less than this by MSI pixels count as without MSI", ge=0,
                                        le=1)
        min_feature_fraction: float = param(0.01, "keep an m/z bin when non-zero in at least this fraction of covered "
                                            "spots", ge=0, le=1)


def iter_prepare(
    samples: list[SampleSpec] | str | Path,
    *,
    bin_ppm: float = 20.0,
    mz_range: tuple[float, float] | None = None,
    annotation_key: str = ANNOTATION_KEY,
    register: bool = True,
    morphology: bool = True,
    morphology_encoder: str | Path | None = None,
    min_msi_coverage: float = 0.5,
    min_feature_fraction: float = 0.01,
) -> ProgressGen:
    """Read all samples, register MSI and H&E onto the spots, build the ``rna``/``msi``/``morphology`` tables.

    Parameters
    ----------
    samples
        Sample specifications, or a dataset folder / ``samples.csv``.
    bin_ppm, mz_range
        m/z binning of the imzML files (the same grid for every sample).
    annotation_key
        ``obs`` column that receives the pathologist's labels.
    register
        Run the automatic registration of MSI and H&E (otherwise the nominal pixel sizes are used).
    morphology, morphology_encoder
        Compute per-spot H&E features (image features, or a user's TorchScript encoder checkpoint).
    min_msi_coverage
        Spots whose disk is covered by MSI pixels less than this fraction are flagged uncovered.
    min_feature_fraction
        Keep an m/z bin in the spot table when it is non-zero in at least this fraction of covered spots.

    Returns
    -------
    SpatialData with every sample, its registration records and the three modality tables.
    """
    from spatialmix import registration as smreg

    # every option wrong: say so before any reading
    PrepareParams.check({"bin_ppm": bin_ppm, "mz_range": mz_range, "register": register, "morphology": morphology,
                         "morphology_encoder": morphology_encoder, "min_msi_coverage": min_msi_coverage,
                         "min_feature_fraction": min_feature_fraction}, owner="prepare option")
    if not isinstance(samples, list):
        samples = read_samples_csv(samples)
    if not samples:
        raise ParameterError("No samples given")
    for spec in samples:  # the last sample's wrong bin size is named before the first sample is read
        check_visium_bin(spec)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    per_sample = []
    for i, spec in enumerate(samples):
        yield Progress("read samples", i, len(samples), spec.sample)
        t = time.perf_counter()
        per_sample.append((yield from iter_read_sample(spec, bin_ppm=bin_ppm, mz_range=mz_range,
                                                       annotation_key=annotation_key)))
        if register:
            _check_registrable_msi(per_sample[-1], spec)
        timings[f"read {spec.sample}"] = time.perf_counter() - t
    yield Progress("read samples", len(samples), len(samples))

    sdata = merge_samples(per_sample, annotation_key=annotation_key)
    meta = sdata.attrs.setdefault("spatialmix", {})
    if register:  # each sample's H&E, then its MSI onto the registered H&E
        yield from smreg.iter_auto_register_all(sdata, [spec.sample for spec in samples], timings=timings)

    yield from iter_build_tables(sdata, annotation_key=annotation_key, morphology=morphology,
                                 morphology_encoder=morphology_encoder, min_msi_coverage=min_msi_coverage,
                                 min_feature_fraction=min_feature_fraction, timings=timings)
    meta["prepare"] = {
        "version": _version(),
        "bin_ppm": bin_ppm,
        "mz_range": list(mz_range) if mz_range else None,
        "annotation_key": annotation_key,
        "min_msi_coverage": min_msi_coverage,
        "min_feature_fraction": min_feature_fraction,
        "morphology_encoder": str(morphology_encoder) if morphology_encoder else "image features",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return sdata


#: the automatic registration finds the tissue in the TIC image from at least this many pixels with signal
MIN_REGISTRATION_PIXELS = 10


def _check_registrable_msi(part, spec: SampleSpec) -> None:
    """Refuse, right after reading, an MSI raster too small for the automatic registration (a single pixel, one
    row), naming the sample and the file, instead of a shape error from inside the registration."""
    from spatialmix.errors import RegistrationError

    name = f"{spec.sample}_msi_tic"
    if name not in part.images:
        return
    tic = np.asarray(part.images[name].data)[0]
    with_signal = int(np.sum(np.isfinite(tic) & (tic > 0)))
    if min(tic.shape) < 2 or with_signal < MIN_REGISTRATION_PIXELS:
        raise RegistrationError(
            f"sample {spec.sample}: the MSI raster of {spec.imzml} is {tic.shape[1]} x {tic.shape[0]} pixels with "
            f"{with_signal} pixel(s) of signal; the automatic registration needs a 2-D image of the section (at "
            f"least {MIN_REGISTRATION_PIXELS} pixels with signal, 2 in each direction). Check that this is the "
            "right imzML file, or switch the automatic registration off (--no-register, [prepare] register = "
            "false) and place the MSI with landmarks")


def merge_samples(parts: list, *, annotation_key: str = ANNOTATION_KEY):
    """One SpatialData from per-sample ones (:func:`iter_read_sample`): images and shapes side by side, the
    per-sample ``rna`` tables stacked into one (raw counts in ``X``), no spot tables of MSI / H&E yet."""
    from spatialdata import SpatialData

    images, shapes, tables, attrs = {}, {}, {}, {}
    for sd_ in parts:
        images.update(sd_.images)
        shapes.update(sd_.shapes)
        for name, table in sd_.tables.items():
            if name != "rna":
                tables[name] = table
        _merge_attrs(attrs, dict(sd_.attrs))
    regions = [f"{s}_spots" for sd_ in parts for s in _samples_in(sd_)]
    rna = _concat_tables([sd_.tables["rna"] for sd_ in parts], regions)
    if annotation_key in rna.obs:
        rna.obs[annotation_key] = pd.Categorical(rna.obs[annotation_key])
    tables["rna"] = rna
    return SpatialData(images=images, shapes=shapes, tables=tables, attrs=attrs)


def _samples_in(sdata) -> list[str]:
    regions = sdata.tables["rna"].obs["region"].astype(str)
    return [r[: -len("_spots")] for r in dict.fromkeys(regions)]


def add_sample(sdata, part, *, annotation_key: str = ANNOTATION_KEY):
    """Add one sample read with :func:`iter_read_sample` to a project (``sdata`` may be None); a sample of
    the same name is replaced.

    The project's spot tables of MSI and H&E, and any model results in them, are dropped: they must be rebuilt
    (:func:`iter_build_tables`) because the set of spots changed. Returns the new SpatialData.
    """
    import anndata as ad

    if sdata is None:
        return merge_samples([part], annotation_key=annotation_key)
    new = set(_samples_in(part))
    keep = [s for s in _samples_in(sdata) if s not in new]

    def mine(name: str, samples) -> bool:  # exact element names (docs/conventions.md): "P1" must not claim "P1_S1_he"
        return any(name == f"{s}_{suffix}" for s in samples for suffix in SAMPLE_ELEMENTS)

    rna = sdata.tables["rna"]
    rows = rna.obs["region"].astype(str).isin([f"{s}_spots" for s in keep]).to_numpy()
    old = ad.AnnData(X=(rna.layers["counts"] if "counts" in rna.layers else rna.X)[rows],
                     obs=rna.obs.iloc[rows].copy(), var=rna.var.copy())
    old.obs = old.obs[[c for c in old.obs.columns if not c.startswith(("pred_", "agree_"))]]
    if annotation_key in old.obs:
        old.obs[annotation_key] = old.obs[annotation_key].astype(object)
    kept = SimpleNamespace(  # merge_samples only reads these four attributes; no validation of a half-built object
        images={k: v for k, v in sdata.images.items() if mine(k, keep)},
        shapes={k: v for k, v in sdata.shapes.items() if mine(k, keep)},
        tables={**{k: v for k, v in sdata.tables.items() if k not in ("rna", *MODALITY_TABLES) and mine(k, keep)},
                "rna": old},
        attrs={"spatialmix": {k: v for k, v in dict(sdata.attrs.get("spatialmix", {})).items()
                              if k not in ("models", "prepare")}},
    )
    for key in ("samples", "registration"):
        block = kept.attrs["spatialmix"].get(key)
        if isinstance(block, dict):
            kept.attrs["spatialmix"][key] = {s: v for s, v in block.items() if s in keep}
    return merge_samples([kept, part] if keep else [part], annotation_key=annotation_key)


def needs_tables(sdata) -> bool:
    """True when the project has no MSI / H&E spot tables for data it holds (they are built after registration)."""
    samples = _samples_in(sdata)
    has_msi = any(f"{s}_msi" in sdata.tables for s in samples)
    has_he = any(f"{s}_he" in sdata.images for s in samples)
    return (has_msi and "msi" not in sdata.tables) or (has_he and "morphology" not in sdata.tables) \
        or "counts" not in sdata.tables["rna"].layers


def iter_build_tables(sdata, *, annotation_key: str = ANNOTATION_KEY, morphology: bool = True,
                      morphology_encoder: str | Path | None = None, min_msi_coverage: float = 0.5,
                      min_feature_fraction: float = 0.01, timings: dict | None = None) -> ProgressGen:
    """Aggregate every sample's MSI pixels and H&E features onto its spots (after registration) and build the
    ``msi`` / ``morphology`` tables aligned on the ``rna`` spots; normalise RNA. Rebuilding replaces them
    (model results written into the old tables go with them). Returns ``sdata``."""
    from spatialmix import features as smfeat

    timings = {} if timings is None else timings
    rna = sdata.tables["rna"]
    if "counts" in rna.layers:  # a rebuild: start again from the raw counts
        rna.X = rna.layers["counts"].copy()
    samples = _samples_in(sdata)
    regions = [f"{s}_spots" for s in samples]
    obs_cols = ["sample", "patient", "batch", "barcode", "region", "spot_id"]
    if annotation_key in rna.obs:
        obs_cols.append(annotation_key)
    msi_parts, morph_parts = [], []
    for s in samples:
        if f"{s}_msi" in sdata.tables:
            t = time.perf_counter()
            msi_parts.append((yield from smfeat.iter_aggregate_msi(sdata, s, min_coverage=min_msi_coverage)))
            timings[f"aggregate msi {s}"] = time.perf_counter() - t
        if morphology and f"{s}_he" in sdata.images:
            t = time.perf_counter()
            morph_parts.append((yield from smfeat.iter_morphology_features(sdata, s, encoder=morphology_encoder)))
            timings[f"morphology {s}"] = time.perf_counter() - t

    yield Progress("build tables", 0, 1)
    base_obs = rna.obs[obs_cols].copy()
    for name, parts, covered in (("msi", msi_parts, "msi_covered"), ("morphology", morph_parts, "he_covered")):
        if parts:
            sdata.tables[name] = _modality_table(parts, base_obs, regions, covered,
                                                 min_feature_fraction if name == "msi" else 0.0)
        elif name in sdata.tables:
            del sdata.tables[name]
    normalize_rna(sdata.tables["rna"])
    yield Progress("build tables", 1, 1)
    return sdata


def _modality_table(parts: list, base_obs: pd.DataFrame, regions: list[str], covered_key: str,
                    min_feature_fraction: float):
    """Stack per-sample spot tables into one table aligned on the ``rna`` spots (same rows, same order).

    Spots a sample has no data for (no file for that modality) are kept with zeros and ``covered_key`` False, so
    that every modality table annotates exactly the same spots and the models can mask them.
    """
    import anndata as ad
    import scipy.sparse as sp
    from spatialdata.models import TableModel

    merged = ad.concat(parts, join="outer", fill_value=0, merge="same")
    merged = merged[merged.obs_names.intersection(base_obs.index, sort=False)]
    missing = base_obs.index.difference(merged.obs_names)
    if len(missing):
        empty = ad.AnnData(
            X=sp.csr_matrix((len(missing), merged.n_vars), dtype=np.float32)
            if sp.issparse(merged.X) else np.zeros((len(missing), merged.n_vars), np.float32),
            obs=pd.DataFrame({covered_key: False}, index=missing),
            var=merged.var,
        )
        merged = ad.concat([merged, empty], join="outer", fill_value=0, merge="same")
    merged = merged[base_obs.index].copy()
    extra = [c for c in merged.obs.columns if c not in base_obs.columns]
    merged.obs = pd.concat([base_obs, merged.obs[extra]], axis=1)
    merged.obs[covered_key] = merged.obs[covered_key].fillna(False).astype(bool)
    if min_feature_fraction > 0:
        covered = merged.obs[covered_key].to_numpy()
        X = merged.X[covered]
        nz = np.asarray((X > 0).sum(axis=0)).ravel() / max(1, covered.sum())
        merged = merged[:, nz >= min_feature_fraction].copy()
    if sp.issparse(merged.X):
        merged.X = merged.X.astype(np.float32)
    merged.obs["region"] = pd.Categorical(merged.obs["region"].astype(str), categories=regions)
    return TableModel.parse(merged, region=regions, region_key="region", instance_key="spot_id")


def _version() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("napari-spatialmix", "spatialdata", "spatialdata-io", "anndata", "scikit-image", "pyimzml"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def prepare(samples, **kwargs):
    """Plain-function form of :func:`iter_prepare`; ``progress=True`` shows a terminal progress bar."""
    progress = kwargs.pop("progress", False)
    return run(iter_prepare(samples, **kwargs), progress=progress)


def table_shapes(sdata) -> dict[str, list[int]]:
    return {name: [int(t.n_obs), int(t.n_vars)] for name, t in sdata.tables.items()}
