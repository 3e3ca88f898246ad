"""End-to-end jobs: read every sample, register, build the per-spot tables; the headless demo.

Everything here is written once as a generator of :class:`~spatialmix.progress.Progress` events (run by the
napari widgets in a worker thread, by scripts and the CLI through :func:`spatialmix.progress.run`).
"""

from __future__ import annotations

import csv
import json
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from spatialmix.errors import InputFileError, MissingFileError, ParameterError
from spatialmix.progress import Progress, ProgressGen, forward, run

ANNOTATION_KEY = "pathologist"
MODALITY_TABLES = ("rna", "msi", "morphology")
#: Per-sample element names are f"{sample}_{suffix}" (docs/conventions.md).
SAMPLE_ELEMENTS = ("spots", "msi", "msi_tic", "he", "visium_hires", "visium_lowres")


@dataclass
class SampleSpec:
    """Where one sample's files are and the physical sizes a user must give."""

    sample: str
    visium: Path
    patient: str | None = None
    imzml: Path | None = None
    msi_pixel_size_um: float | None = None
    he: Path | None = None
    he_microns_per_pixel: float | None = None
    annotations: Path | None = None

    def __post_init__(self) -> None:
        self.sample = str(self.sample)
        self.patient = str(self.patient) if self.patient not in (None, "") else self.sample
        for name in ("visium", "imzml", "he", "annotations"):
            value = getattr(self, name)
            setattr(self, name, Path(value) if value not in (None, "") else None)
        if self.imzml is not None and self.msi_pixel_size_um in (None, ""):
            raise ParameterError(
                f"sample {self.sample}: an imzML file is given but no msi_pixel_size_um. "
                "Give the MSI raster step in micrometres (e.g. 50)"
            )
        if self.he is not None and self.he_microns_per_pixel in (None, ""):
            raise ParameterError(
                f"sample {self.sample}: an H&E image is given but no he_microns_per_pixel. "
                "Give the scan resolution in micrometres per pixel (e.g. 0.5)"
            )


_SIZE_EXAMPLES = {"msi_pixel_size_um": "the MSI raster step in micrometres, e.g. 50",
                  "he_microns_per_pixel": "the H&E scan resolution in micrometres per pixel, e.g. 0.5"}


def read_samples_csv(path: str | Path, *, check_files: bool = True) -> list[SampleSpec]:
    """Read a dataset's ``samples.csv`` (or a dataset folder holding one); paths are relative to its folder.

    Columns: ``sample, patient, visium, imzml, msi_pixel_size_um, he, he_microns_per_pixel, annotations``
    (only ``sample`` and ``visium`` are required). Every row is checked before anything is read (numbers,
    required sizes and, with ``check_files``, that every named file exists); a mistake raises an error naming
    the file, the line, the column and the sample.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "samples.csv"
    if not path.exists():
        raise MissingFileError(
            "No samples.csv found", path, fix="A dataset folder needs a samples.csv listing each sample's files "
            "(see `spatialmix simulate` for an example)"
        )
    base = path.parent
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (UnicodeDecodeError, csv.Error) as err:
        raise InputFileError(f"samples.csv cannot be read as CSV text ({err})", path,
                             fix="Save it as UTF-8 CSV with a header line") from None
    if not rows:
        raise InputFileError("samples.csv lists no samples", path, fix="Add one row per sample")
    missing = {"sample", "visium"} - set(rows[0])
    if missing:
        raise InputFileError(
            f"samples.csv lacks the column(s) {sorted(missing)}", path,
            fix="Columns are sample, patient, visium, imzml, msi_pixel_size_um, he, he_microns_per_pixel, annotations",
        )
    specs = []
    files: list[dict] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, start=2):
        name = (row.get("sample") or "").strip()
        if not name or name in seen:
            raise InputFileError(f"line {i}: sample name {name!r} is empty or repeated", path)
        seen.add(name)

        def where(column: str) -> str:
            return f"{path.name} line {i}, column {column} (sample {name})"

        def rel(key: str) -> Path | None:
            v = (row.get(key) or "").strip()
            return (base / v) if v else None

        def num(key: str) -> float | None:
            v = (row.get(key) or "").strip()
            if not v:
                return None
            try:
                value = float(v)
            except ValueError:
                raise InputFileError(f"{where(key)}: {v!r} is not a number", path,
                                     fix=f"Write a plain number without unit: {_SIZE_EXAMPLES[key]}") from None
            if not (np.isfinite(value) and value > 0):
                raise InputFileError(f"{where(key)}: must be a positive number, got {v!r}", path,
                                     fix=f"Give {_SIZE_EXAMPLES[key]}")
            return value

        sizes = {key: num(key) for key in _SIZE_EXAMPLES}
        for file_key, size_key in (("imzml", "msi_pixel_size_um"), ("he", "he_microns_per_pixel")):
            if rel(file_key) is not None and sizes[size_key] is None:
                what = "an imzML file" if file_key == "imzml" else "an H&E image"
                raise ParameterError(f"sample {name}: {what} is given but no {size_key} ({where(size_key)} is "
                                     f"empty; {path}). Give {_SIZE_EXAMPLES[size_key]}")
        files.append({key: (rel(key), where(key)) for key in ("visium", "imzml", "he", "annotations")})
        specs.append(
            SampleSpec(
                sample=name,
                patient=(row.get("patient") or "").strip() or None,
                visium=rel("visium"),
                imzml=rel("imzml"),
                msi_pixel_size_um=sizes["msi_pixel_size_um"],
                he=rel("he"),
                he_microns_per_pixel=sizes["he_microns_per_pixel"],
                annotations=rel("annotations"),
            )
        )
    # the files last, once every row's text is known to be right
    for row_files in files if check_files else []:
        for key, (p, where) in row_files.items():
            if p is None:
                continue
            fix = f"Paths in {path.name} are relative to its folder ({base}); correct the path or the file name"
            if not p.exists():
                raise MissingFileError(f"{where}: not found: {p.resolve()}", path, fix=fix)
            if (key == "visium") != p.is_dir():
                raise InputFileError(f"{where}: {p.resolve()} must be a {'folder' if key == 'visium' else 'file'}",
                                     path, fix=fix)
            if key == "imzml" and not any(c.stem == p.stem and c.suffix.lower() == ".ibd" and c.is_file()
                                          for c in p.parent.iterdir()):
                raise MissingFileError(f"{where}: {p.name} has no .ibd companion ({p.with_suffix('.ibd').resolve()} "
                                       "not found)", path, fix="Copy the .ibd file (same name, .ibd) next to the "
                                       ".imzML file")
    return specs


def _merge_attrs(target: dict, source: dict) -> None:
    for key, value in source.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_attrs(target[key], value)
        else:
            target[key] = value


def iter_read_sample(spec: SampleSpec, *, bin_ppm: float = 20.0, mz_range=None, annotation_key=ANNOTATION_KEY):
    """Read one sample's files into a SpatialData (no registration yet)."""
    from spatialmix import io as smio

    yield Progress(f"read Visium {spec.sample}", 0, 1, str(spec.visium))
    sdata = smio.read_visium(spec.visium, sample=spec.sample, patient=spec.patient)
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

    from spatialmix.io.imzml import _check_params as _check_msi_params

    if not isinstance(samples, list):
        samples = read_samples_csv(samples)
    if not samples:
        raise ParameterError("No samples given")
    _check_msi_params(1.0, mz_range, bin_ppm, "tic", 1)  # bin_ppm / mz_range wrong: say so before any reading
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
    if register:
        for spec in samples:
            # H&E first: with reference="auto" the MSI is then aligned to the registered H&E, which shows the
            # whole section (the Visium image may cut the tissue, leaving its shape ambiguous)
            for modality, element in (("he", f"{spec.sample}_he"), ("msi", f"{spec.sample}_msi_tic")):
                if element in sdata.images:
                    t = time.perf_counter()
                    yield from smreg.iter_auto_register(sdata, spec.sample, modality)
                    timings[f"register {spec.sample} {modality}"] = time.perf_counter() - t

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


def bundled_sample_data() -> Path:
    """Folder of the bundled demo dataset (inside an installed wheel, or ``sample_data/`` of a checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "sample_data", here.parents[1] / "sample_data"):
        if (candidate / "samples.csv").exists():
            return candidate
    raise MissingFileError(
        "The bundled sample data was not found", here / "sample_data",
        fix="Reinstall napari-spatialmix, or create it with `spatialmix simulate --out sample_data --samples 4 --seed 0`",
    )


def table_shapes(sdata) -> dict[str, list[int]]:
    return {name: [int(t.n_obs), int(t.n_vars)] for name, t in sdata.tables.items()}


def iter_demo(out: str | Path, *, data: str | Path | None = None, overwrite: bool = True, integrate: bool = True,
              model: str = "mima", model_params: dict | None = None, train: dict | None = None,
              resume: bool = False, **prepare_kwargs):
    """The headless main job on the bundled sample (or ``data``): prepare, train MIMA, write its outputs,
    save, report, figures.

    Writes into ``out``: ``project.zarr`` (with every model output), ``model/`` (the trained model),
    ``metrics.json``, ``report.json``, ``report.md``, ``overlay_<sample>.png`` and ``results_<sample>.png``.
    ``train`` overrides the demo's training options (:data:`spatialmix.integrate.DEMO_TRAIN`); ``resume``
    continues a stopped demo in ``out`` (see :func:`iter_job`).
    """
    from spatialmix.integrate import DEMO_TRAIN

    data = Path(data) if data is not None else bundled_sample_data()
    return (yield from iter_job(read_samples_csv(data), out, data_dir=data, overwrite=overwrite, integrate=integrate,
                                model=model, model_params=model_params, train={**DEMO_TRAIN, **(train or {})},
                                prepare_kwargs=prepare_kwargs, resume=resume))


def iter_run(config, out: str | Path, *, overwrite: bool = False, resume: bool = False):
    """``spatialmix run CONFIG.toml --out DIR [--resume]``: the main job on user data described by a run
    configuration (:func:`spatialmix.config.load_config`); ``resume`` continues a stopped run (:func:`iter_job`)."""
    from spatialmix.config import load_config

    cfg = config if not isinstance(config, (str, Path)) else load_config(config)
    from spatialmix.models import MODELS
    from spatialmix.results import supported_outputs

    o = dict(cfg.outputs)
    outputs = {
        "outputs": [k for k in supported_outputs(MODELS[cfg.model]) if (k != "rgb" or o.get("rgb", True))
                    and (k not in ("corrected", "denoised") or o.get("corrected", True))],
        "translations": o.get("translations") or None,  # empty: every target from all other modalities
        "figures": bool(o.get("figures", True)) and o.get("rgb", True),
        "metrics": bool(o.get("metrics", True)),
    }
    prepare_kwargs = {**cfg.prepare, "annotation_key": cfg.annotation_key}
    return (yield from iter_job(cfg.samples, out, data_dir=Path(cfg.path).parent, overwrite=overwrite,
                                integrate=True, model=cfg.model, model_params=cfg.model_params, train=cfg.train,
                                prepare_kwargs=prepare_kwargs, results_options=outputs,
                                report_extra={"config": cfg.to_dict()}, resume=resume))


#: Folder of ``OUT`` where the main job keeps its training checkpoint (unless ``checkpoint_dir`` is configured).
JOB_CHECKPOINTS = "checkpoints"


def job_checkpoint_dir(out: str | Path, train: dict | None = None) -> Path:
    """Where :func:`iter_job` writes its training checkpoint: the configured ``checkpoint_dir`` or
    ``OUT/checkpoints``."""
    given = (train or {}).get("checkpoint_dir")
    return Path(given) if given else Path(out) / JOB_CHECKPOINTS


def job_state(out: str | Path, train: dict | None = None) -> dict:
    """What a stopped main job left in ``out``: ``project`` (path or None), ``checkpoint`` (path or None),
    ``epoch`` (the checkpoint's last completed epoch) and ``finished`` (training had ended)."""
    from spatialmix.train import CHECKPOINT_NAME

    out = Path(out)
    project = out / "project.zarr"
    ckpt = job_checkpoint_dir(out, train) / CHECKPOINT_NAME
    state = {"project": project if project.is_dir() else None, "checkpoint": None, "epoch": None, "finished": False}
    if ckpt.is_file():
        import torch

        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
            state.update(checkpoint=ckpt, epoch=int(saved["epoch"]), finished=bool(saved.get("finished")))
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is reported as none
            pass
    return state


def iter_job(specs, out: str | Path, *, data_dir: Path | None = None, overwrite: bool = True,
             integrate: bool = True, model: str = "mima", model_params: dict | None = None,
             train: dict | None = None, prepare_kwargs: dict | None = None, results_options: dict | None = None,
             report_extra: dict | None = None, resume: bool = False):
    """prepare -> save project -> train + write outputs + metrics -> save project -> figures -> report (the one
    main job).

    Nothing done is lost when the job is stopped (Ctrl-C, SIGTERM): the prepared project is saved in
    ``OUT/project.zarr`` before training starts, and training keeps its last completed epoch in
    :func:`job_checkpoint_dir` (``OUT/checkpoints/last.ckpt``). ``resume=True`` continues from there: it opens the
    saved project instead of preparing again and resumes training from the checkpoint (when there is one).
    ``report_extra`` is added to ``report.json`` (e.g. the run configuration)."""
    from spatialmix.errors import ProjectError
    from spatialmix.plotting import save_overlays
    from spatialmix.project import load_project, save_project
    from spatialmix.train import CHECKPOINT_NAME

    prepare_kwargs = dict(prepare_kwargs or {})
    results_options = dict(results_options or {})
    train = dict(train or {})
    t0 = time.perf_counter()
    out = Path(out)
    project = out / "project.zarr"
    ckpt_dir = job_checkpoint_dir(out, train)
    if integrate:
        train["checkpoint_dir"] = str(ckpt_dir)
    annotation_key = prepare_kwargs.get("annotation_key", ANNOTATION_KEY)
    if resume:
        if not project.is_dir():
            raise ProjectError(f"nothing to resume in {out}: it holds no project.zarr (the job was stopped before "
                               "its project was prepared). Run the same command without --resume")
        yield Progress("open project", 0, 1, str(project))
        sdata = load_project(project)
        yield Progress("open project", 1, 1, str(project))
        # from the last completed epoch; stopped before the first one ended: train from the start
        train["resume"] = True if (ckpt_dir / CHECKPOINT_NAME).is_file() else None
    else:
        if project.exists() and not overwrite:  # fail before minutes of work, not after
            raise ProjectError(f"{project} already exists. Pass --overwrite to replace it, or choose another --out")
        sdata = yield from iter_prepare(specs, **prepare_kwargs)
        out.mkdir(parents=True, exist_ok=True)
        if integrate:  # a stop during training keeps the prepared project
            yield Progress("save prepared project", 0, 1, str(project))
            save_project(sdata, project, overwrite=overwrite)
            yield Progress("save prepared project", 1, 1, str(project))
            if ckpt_dir == out / JOB_CHECKPOINTS and not train.get("resume"):
                # an earlier job's checkpoint must not be resumed into this one
                (ckpt_dir / CHECKPOINT_NAME).unlink(missing_ok=True)
    t_prepare = time.perf_counter() - t0
    integration = None
    if integrate:
        from spatialmix.integrate import iter_integrate

        integration = yield from iter_integrate(
            sdata, out, model=model, model_params=model_params, train=train, annotation_key=annotation_key,
            truth_dir=data_dir, figures=results_options.pop("figures", True),
            metrics=results_options.pop("metrics", True), results_options=results_options)
    t_integrate = time.perf_counter() - t0 - t_prepare
    yield Progress("save project", 0, 1)
    zarr_path = save_project(sdata, project, overwrite=overwrite or resume or integrate)
    yield Progress("figures", 0, 1)
    pngs = save_overlays(sdata, out, annotation_key=annotation_key)
    reg = sdata.attrs["spatialmix"].get("registration", {})
    truth_err = registration_error_vs_truth(sdata, data_dir) if data_dir is not None else {}
    files = [p for s in specs for p in (s.visium, s.imzml, s.he, s.annotations) if p is not None]
    size = sum(q.stat().st_size for p in files for q in ([p] if p.is_file() else p.rglob("*")) if q.is_file())
    if any(s.imzml is not None for s in specs):
        size += sum(s.imzml.with_suffix(".ibd").stat().st_size for s in specs
                    if s.imzml is not None and s.imzml.with_suffix(".ibd").exists())
    report = {
        "data": str(data_dir) if data_dir is not None else None,
        "samples": [s.sample for s in specs],
        "registration_rms_um": {
            s: {m: round(float(r.get("rms_um", float("nan"))), 2) for m, r in reg.get(s, {}).items()} for s in reg
        },
        "registration_error_vs_truth_um": truth_err,
        "table_shapes": table_shapes(sdata),
        "data_size_mb": round(size / 1e6, 2),
        "seconds": {"prepare": round(t_prepare, 2), "integrate": round(t_integrate, 2),
                    "total": round(time.perf_counter() - t0, 2)},
        "timings_s": sdata.attrs["spatialmix"]["prepare"]["timings_s"],
        "outputs": {"project": str(zarr_path), "overlays": [str(p) for p in pngs],
                    **({"results": integration["figures"], "model": integration["model_dir"],
                        "metrics": integration["metrics_json"]} if integration else {})},
        "integration": integration["metrics"] if integration else None,
        "versions": sdata.attrs["spatialmix"]["prepare"]["version"],
        **(report_extra or {}),
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(format_report(report))
    yield Progress("figures", 1, 1)
    return report


def registration_error_vs_truth(sdata, data: Path) -> dict:
    """For simulated data (a ``truth/transforms.json`` per sample): RMS error in um of the stored transforms
    against the true ones, over the in-tissue spot centres. Empty for real data."""
    from spatialmix._elements import element_affine
    from spatialmix.registration import transform_error_um

    out: dict[str, dict[str, float]] = {}
    for sample in sdata.attrs.get("spatialmix", {}).get("samples", {}):
        folder = data / sample / "truth"
        if not (folder / "transforms.json").exists():
            continue
        truth = json.loads((folder / "transforms.json").read_text())
        spots = pd.read_csv(folder / "spots.csv")
        pts = spots.loc[spots["in_tissue"] == 1, ["x_um", "y_um"]].to_numpy()
        for modality, element in (("msi", f"{sample}_msi_tic"), ("he", f"{sample}_he")):
            if element in sdata.images and modality in truth:
                err = transform_error_um(element_affine(sdata.images[element], sample), np.asarray(truth[modality]), pts)
                out.setdefault(sample, {})[modality] = round(float(err), 2)
    return out


def format_report(report: dict) -> str:
    truth = report.get("registration_error_vs_truth_um") or {}
    lines = ["# napari-spatialmix demo report", "", f"Data: `{report['data']}` ({report.get('data_size_mb', '?')} MB)", "",
             "## Registration (automatic)", "",
             "Residual: RMS distance between the reference tissue boundary (Visium image; for MSI the registered H&E) "
             "and the registered moving tissue boundary "
             "(includes the boundary's pixelation)." + (" Truth: RMS error against the simulator's true transform "
                                                        "over the in-tissue spot centres." if truth else ""), "",
             "| sample | MSI residual | H&E residual |" + (" MSI error vs truth | H&E error vs truth |" if truth else ""),
             "|---|---|---|" + ("---|---|" if truth else "")]
    for s, r in report["registration_rms_um"].items():
        row = f"| {s} | {r.get('msi', float('nan')):.1f} um | {r.get('he', float('nan')):.1f} um |"
        if truth:
            t = truth.get(s, {})
            row += f" {t.get('msi', float('nan')):.1f} um | {t.get('he', float('nan')):.1f} um |"
        lines.append(row)
    lines += ["", "## Tables (spots x features)", "", "| table | shape |", "|---|---|"]
    for name, shape in report["table_shapes"].items():
        lines.append(f"| {name} | {shape[0]} x {shape[1]} |")
    integ = report.get("integration") or {}
    if integ.get("integration"):
        sched = integ.get("schedule") or {}
        how = ""
        if sched.get("best_epoch"):
            how = (f"; {'epochs auto: ' if sched.get('auto') else ''}{sched.get('epochs')} planned, "
                   f"{'early stop, ' if sched.get('early_stopped') else ''}best validation epoch {sched['best_epoch']} "
                   "kept; loss curve in training_curve.png")
        lines += ["", f"## Integration ({integ.get('epochs')} epochs{how}, {integ.get('train_seconds')} s of training)", "",
                  f"Scores in [0, 1], higher is better (scib-metrics), against the {integ.get('labels')}.", "",
                  "| representation | iLISI | batch ASW | label ASW | ARI | NMI | batch score | bio score |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, sc in integ["integration"].items():
            lines.append(f"| {name} | " + " | ".join(f"{sc[k]:.3f}" for k in (
                "ilisi", "batch_asw", "label_asw", "ari", "nmi", "batch_score", "bio_score")) + " |")
    if integ.get("translation_heldout"):
        lines += ["", "## Translation on held-out spots (model's validation split)", "",
                  "Median per-feature Pearson r and MSE over the 1,000 most variable features; baseline: the mean "
                  "profile of the spot's own annotation class over the training spots.", "",
                  "| direction | spots | r | baseline r | MSE | baseline MSE |", "|---|---|---|---|---|---|"]
        for name, t in integ["translation_heldout"].items():
            lines.append(f"| {name} | {t['n_heldout_spots']} | {t['pearson_median']:.3f} | "
                         f"{t['baseline_pearson_median']:.3f} | {t['mse']:.3f} | {t['baseline_mse']:.3f} |")
    secs = report["seconds"]
    lines += ["", f"Time: prepare {secs['prepare']:.1f} s"
              + (f", integrate {secs['integrate']:.1f} s" if "integrate" in secs else "")
              + f", total {secs['total']:.1f} s", ""]
    return "\n".join(lines)


def demo(out, **kwargs):
    progress = kwargs.pop("progress", False)
    return run(iter_demo(out, **kwargs), progress=progress)


def _data_fingerprint(data: Path) -> str:
    import hashlib

    from spatialmix import __version__

    h = hashlib.sha1(__version__.encode())
    for p in sorted(data.rglob("*")):
        if p.is_file() and "truth" not in p.parts:
            st = p.stat()
            h.update(f"{p.relative_to(data)}:{st.st_size}".encode())
    h.update((data / "samples.csv").read_bytes())
    return h.hexdigest()[:12]


def iter_demo_project(*, cache_dir: str | Path | None = None, data: str | Path | None = None):
    """The bundled demo as a prepared project, cached as a zarr so that opening it again takes a second.

    The cache lives in ``cache_dir`` (default ``$XDG_CACHE_HOME/spatialmix`` or ``~/.cache/spatialmix``) under a
    name derived from the data files and the package version; it is rebuilt when either changes.
    """
    import os

    from spatialmix.project import load_project, save_project

    data = Path(data) if data is not None else bundled_sample_data()
    if cache_dir is None:
        cache_dir = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spatialmix"
    path = Path(cache_dir) / f"demo-{_data_fingerprint(data)}.zarr"
    if path.exists():
        try:
            yield Progress("open cached demo", 0, 1, str(path))
            return load_project(path)
        except Exception:  # a damaged cache is rebuilt, never shown half
            import shutil

            shutil.rmtree(path, ignore_errors=True)
    sdata = yield from iter_prepare(read_samples_csv(data))
    try:
        save_project(sdata, path, overwrite=True)
    except OSError as err:  # read-only home: still show the demo
        warnings.warn(f"could not cache the demo project at {path}: {err}", stacklevel=2)
    return sdata
