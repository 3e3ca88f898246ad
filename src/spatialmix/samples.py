"""What a dataset is made of: one :class:`SampleSpec` per sample, read from ``samples.csv`` and checked before
anything is read; the bundled demo dataset's folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spatialmix.errors import InputFileError, MissingFileError, ParameterError

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
    #: Visium HD only: the bin size to read (``binned_outputs/square_XXXum``), micrometres; None = 16
    visium_bin_um: float | None = None

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
                  "he_microns_per_pixel": "the H&E scan resolution in micrometres per pixel, e.g. 0.5",
                  "visium_bin_um": "the Visium HD bin size in micrometres, e.g. 8 (one of the binned_outputs/ folders)"}


def read_samples_csv(path: str | Path, *, check_files: bool = True) -> list[SampleSpec]:
    """Read a dataset's ``samples.csv`` (or a dataset folder holding one); paths are relative to its folder.

    Columns: ``sample, patient, visium, imzml, msi_pixel_size_um, he, he_microns_per_pixel, annotations`` and,
    for Visium HD, ``visium_bin_um`` (only ``sample`` and ``visium`` are required). Every row is checked before
    anything is read (numbers, required sizes and, with ``check_files``, that every named file exists); a mistake
    raises an error naming the file, the line, the column and the sample.
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
                visium_bin_um=sizes["visium_bin_um"],
            )
        )
    # the files last, once every row's text is known to be right
    for row_files, spec in zip(files, specs) if check_files else []:
        for key, (p, where) in row_files.items():
            if p is None:
                continue
            fix = f"Paths in {path.name} are relative to its folder ({base}); correct the path or the file name"
            if not p.exists():
                raise MissingFileError(f"{where}: not found: {p.resolve()}", path, fix=fix)
            if (key == "visium") != p.is_dir():
                raise InputFileError(f"{where}: {p.resolve()} must be a {'folder' if key == 'visium' else 'file'}",
                                     path, fix=fix)
            if key == "visium" and spec.visium_bin_um is not None:
                from spatialmix.io.visium_hd import bin_size_problem

                if (problem := bin_size_problem(p, spec.visium_bin_um)) is not None:
                    raise InputFileError(f"{where}: visium_bin_um {spec.visium_bin_um:g}: {problem[0]}", path,
                                         fix=problem[1])
            if key == "imzml" and not any(c.stem == p.stem and c.suffix.lower() == ".ibd" and c.is_file()
                                          for c in p.parent.iterdir()):
                raise MissingFileError(f"{where}: {p.name} has no .ibd companion ({p.with_suffix('.ibd').resolve()} "
                                       "not found)", path, fix="Copy the .ibd file (same name, .ibd) next to the "
                                       ".imzML file")
    return specs


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
