"""Write a simulated multi-sample dataset (Visium outs/, imzML + ibd, H&E TIFF, annotations, truth)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..progress import Progress, ProgressGen, run
from ._config import get_size, sample_name
from ._random import S_MSI_SPECTRA, SAMPLE, rng_for
from .biology import make_biology
from .modalities import MSISimulator, simulate_rna, spot_truth
from .scene import SampleScene, _check_args, sample_scene
from .writers import (
    write_10x_h5, write_csv, write_he_tiff, write_imzml, write_npz, write_spaceranger_spatial,
)

SAMPLES_CSV_COLUMNS = ["sample", "patient", "visium", "imzml", "msi_pixel_size_um", "he", "he_microns_per_pixel",
                       "annotations"]
_STEPS = ("tissue and images", "RNA counts", "MSI spectra", "H&E image", "annotations and truth")


def _relative(sample: str) -> dict[str, str]:
    return {
        "visium": f"{sample}/outs",
        "imzml": f"{sample}/msi/{sample}.imzML",
        "he": f"{sample}/he/{sample}_HE.tif",
        "annotations": f"{sample}/annotations.csv",
    }


def iter_simulate(
    out: str | Path,
    *,
    n_samples: int | None = None,
    seed: int = 0,
    size: str = "small",
) -> ProgressGen[Path]:
    """Simulate a multi-sample Visium + MSI + H&E dataset and write it to ``out`` (progress generator).

    Samples are ``P{patient}_S{section}``, two consecutive sections per patient. Each gets a Space Ranger
    ``outs/`` folder, an imzML + ibd pair (patient 1 continuous, the others processed), an H&E TIFF, a
    Loupe-style ``annotations.csv`` and ``truth/`` (true transforms, regions and batch-free signals);
    ``samples.csv`` lists them. The layout is the one in ``docs/conventions.md``.

    Parameters
    ----------
    out
        Folder to write (created if needed; the sample folders in it are overwritten).
    n_samples
        Number of samples; default 4 for ``small`` and 16 (8 patients x 2) for ``paper``.
    seed
        Same seed, same bytes.
    size
        ``"small"`` (a reduced 34 x 30 capture area, 300-350 spots in tissue, 1,500 genes, 150 m/z features,
        50 um MSI, 4 um/px H&E: ~21 MB and ~7 s for 4 samples) or ``"paper"`` (the full 78 x 64 Visium
        lattice, 2,000-3,300 spots in tissue, 18,950 genes, 12,510 m/z features, 50 um MSI, 2 um/px H&E
        pyramids: ~20-30 s and 190-300 MB per sample).

    Yields
    ------
    Progress
        One event per sample and step, plus per-chunk events while spectra are written.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    seed, spec, n_samples = _check_args(seed, size, n_samples)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out must be a folder, but {out} is a file. Give a new or existing folder path")
    out.mkdir(parents=True, exist_ok=True)
    total = n_samples * len(_STEPS)
    rows = []
    for i in range(n_samples):
        row = yield from iter_write_sample(out, i, seed=seed, size=spec.name, n_samples=n_samples,
                                           step=i * len(_STEPS), total=total)
        rows.append(row)
    table = pd.DataFrame(rows)[SAMPLES_CSV_COLUMNS]
    write_csv(out / "samples.csv", table)
    yield Progress("simulate", total, total, f"wrote {n_samples} samples to {out}")
    return out


def iter_write_sample(out: Path, index: int, *, seed: int, size: str, n_samples: int, step: int = 0,
                      total: int | None = None) -> ProgressGen[dict]:
    """Write the files of sample ``index`` of a dataset into ``out`` and return its ``samples.csv`` row.

    The building block of :func:`iter_simulate` (which validates the arguments); useful alone to time or
    inspect one sample of a large dataset.
    """
    spec = get_size(size)
    bio = make_biology(seed, spec.name, n_samples)
    name, patient, _ = sample_name(index)
    stage = "simulate"
    yield Progress(stage, step, total, f"{name}: {_STEPS[0]}")
    scene = sample_scene(seed=seed, size=spec.name, sample_index=index, n_samples=n_samples)
    rel = _relative(name)

    yield Progress(stage, step + 1, total, f"{name}: {_STEPS[1]}")
    rna = simulate_rna(scene, bio)
    outs = out / rel["visium"]
    outs.mkdir(parents=True, exist_ok=True)
    write_10x_h5(outs / "filtered_feature_bc_matrix.h5", rna.counts, scene.in_tissue.barcode.to_numpy(),
                 bio.gene_ids, bio.gene_names, library_id=name)
    write_spaceranger_spatial(outs / "spatial", scene.spots, scene.scalefactors, scene.visium_hires,
                              scene.visium_lowres)

    yield Progress(stage, step + 2, total, f"{name}: {_STEPS[2]}")
    msi = MSISimulator(scene, bio)
    imzml = out / rel["imzml"]
    imzml.parent.mkdir(parents=True, exist_ok=True)
    n_px = scene.msi_tic.size
    file_uuid = uuid.UUID(bytes=rng_for(seed, SAMPLE, index, S_MSI_SPECTRA, 2).bytes(16), version=4)
    for done in write_imzml(imzml, msi.spectra(), scene.msi_tic.shape, mode=scene.msi_mode, file_uuid=file_uuid,
                            run_id=name, pixel_size_um=scene.msi_pixel_size_um):
        yield Progress(stage, step + 2, total, f"{name}: {_STEPS[2]} {done}/{n_px} pixels")

    yield Progress(stage, step + 3, total, f"{name}: {_STEPS[3]}")
    he = out / rel["he"]
    he.parent.mkdir(parents=True, exist_ok=True)
    write_he_tiff(he, scene.he_image, scene.he_microns_per_pixel, pyramid=spec.he_pyramid)

    yield Progress(stage, step + 4, total, f"{name}: {_STEPS[4]}")
    _write_annotations_and_truth(out / name, scene, bio, rna, msi)
    return {"sample": name, "patient": f"P{patient}", **rel, "msi_pixel_size_um": scene.msi_pixel_size_um,
            "he_microns_per_pixel": scene.he_microns_per_pixel}


def simulate(out: str | Path, *, n_samples: int | None = None, seed: int = 0, size: str = "small") -> Path:
    """Simulate a dataset and write it to ``out``; see :func:`iter_simulate`. Returns ``out`` as a Path."""
    return run(iter_simulate(out, n_samples=n_samples, seed=seed, size=size))


def _write_annotations_and_truth(sdir: Path, scene: SampleScene, bio, rna, msi: MSISimulator) -> None:
    tissue_spots = scene.in_tissue
    write_csv(sdir / "annotations.csv",
              pd.DataFrame({"Barcode": tissue_spots.barcode.to_numpy(), "Pathologist": tissue_spots.label.to_numpy()}))
    truth = sdir / "truth"
    truth.mkdir(parents=True, exist_ok=True)
    transforms = {
        "msi": np.asarray(scene.msi_to_um).tolist(),
        "he": np.asarray(scene.he_to_um).tolist(),
        "msi_pixel_size_um": scene.msi_pixel_size_um,
        "he_microns_per_pixel": scene.he_microns_per_pixel,
    }
    (truth / "transforms.json").write_text(json.dumps(transforms, indent=2) + "\n")
    write_csv(truth / "spots.csv", scene.spots[["barcode", "in_tissue", "x_um", "y_um", "region", "label"]])
    st = spot_truth(scene, bio)
    lip = bio.lipids
    write_npz(truth / "signals.npz", {
        "barcodes": st.barcodes.astype(str),
        "x_um": st.x_um,
        "y_um": st.y_um,
        "factors": st.factors,
        "private_rna": st.private["rna"],
        "private_msi": st.private["msi"],
        "private_he": st.private["he"],
        "region": st.region,
        "region_names": np.array(bio.class_names),
        "cellularity": st.cellularity,
        "rna_mean": rna.mean,
        "gene_ids": bio.gene_ids.astype(str),
        "gene_names": bio.gene_names.astype(str),
        "msi_mean": msi.truth_at_spots(st.x_um, st.y_um),
        "msi_mz": lip["mz"],
        "msi_lipid": lip["lipid"],
        "msi_isotope": lip["isotope"],
        "msi_ppm_shift": np.float64(msi.ppm_shift),
        "msi_intensity_factor": np.float64(scene.msi_signal["intensity_factor"]),
        "rna_library_size": np.float64(rna.library_factor),
        "rna_gene_batch": rna.gene_batch,
    })
