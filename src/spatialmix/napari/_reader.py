"""npe2 readers. Each returns a function producing layer data tuples, or None when the path is not ours."""

from __future__ import annotations

from pathlib import Path

from spatialmix.napari._layers import SEP, image_layer, project_layers, spots_layer


def _single(path):
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    return Path(path)


def get_project_reader(path):
    p = _single(path)
    if p is None or p.suffix != ".zarr" or not p.is_dir():
        return None
    if not ((p / "zarr.json").exists() or (p / ".zgroup").exists()):
        return None

    def reader(_path):
        from spatialmix.project import load_project

        return project_layers(load_project(p))

    return reader


def _visium_outs(p: Path) -> Path | None:
    if not p.is_dir():
        return None
    for cand in (p, p / "outs"):
        if (cand / "spatial").is_dir() and any(cand.glob("*filtered_feature_bc_matrix.h5")):
            return cand
    return None


def get_visium_reader(path):
    p = _single(path)
    outs = _visium_outs(p) if p is not None else None
    if outs is None:
        return None

    def reader(_path):
        from spatialmix.io import read_visium

        sample = (outs.parent.name if outs.name == "outs" else outs.name) or "sample"
        sdata = read_visium(outs, sample=sample)
        layers = []
        if f"{sample}_visium_hires" in sdata.images:
            layers.append(image_layer(sdata, f"{sample}_visium_hires", sample, layer_name=f"{sample}{SEP}Visium image"))
        layers.append(spots_layer(sdata, sample))
        return layers

    return reader


def _imzml_pixel_size(p: Path) -> float | None:
    """Pixel size from the imzML header, when the file states it (IMS:1000046)."""
    try:
        head = p.read_text(errors="ignore")[:200_000]
    except OSError:
        return None
    import re

    m = re.search(r'accession="IMS:1000046"[^>]*value="([0-9.eE+-]+)"', head) or re.search(
        r'value="([0-9.eE+-]+)"[^>]*accession="IMS:1000046"', head)
    return float(m.group(1)) if m else None


def get_imzml_reader(path):
    p = _single(path)
    if p is None or p.suffix.lower() != ".imzml":
        return None

    def reader(_path):
        from spatialmix.io import read_imzml

        px = _imzml_pixel_size(p)
        sample = p.stem
        sdata = read_imzml(p, sample=sample, pixel_size_um=px or 1.0)
        name = f"{sample}{SEP}MSI TIC" + ("" if px else " (pixel size unknown: 1 unit = 1 pixel)")
        return [image_layer(sdata, f"{sample}_msi_tic", sample, layer_name=name)]

    return reader


def _tiff_microns_per_pixel(p: Path) -> float | None:
    if p.suffix.lower() not in (".tif", ".tiff"):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(p) as tif:
            page = tif.pages[0]
            tags = page.tags
            if "XResolution" not in tags or "ResolutionUnit" not in tags:
                return None
            num, den = tags["XResolution"].value
            unit = int(tags["ResolutionUnit"].value)
            if not num:
                return None
            per_unit = num / den
            return {2: 25400.0, 3: 10000.0}.get(unit, 0) / per_unit or None
    except Exception:
        return None


def get_histology_reader(path):
    p = _single(path)
    if p is None or p.suffix.lower() not in (".tif", ".tiff", ".png", ".jpg", ".jpeg"):
        return None

    def reader(_path):
        from spatialmix.io import read_histology

        mpp = _tiff_microns_per_pixel(p)
        sample = p.stem
        sdata = read_histology(p, sample=sample, microns_per_pixel=mpp or 1.0)
        return [image_layer(sdata, f"{sample}_he", sample, layer_name=f"{sample}{SEP}H&E")]

    return reader
