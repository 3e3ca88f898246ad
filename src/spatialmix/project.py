"""Saving and reopening a napari-spatialmix project (one SpatialData zarr holding every sample and result).

Saving is atomic: the zarr is written next to the target under a temporary name and moved into place only
when complete, so an error (or a full disk) never leaves a half-written project or destroys the previous one.
"""

from __future__ import annotations

import json
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from spatialmix.errors import ProjectError

ATTRS_KEY = "spatialmix"


def spatialmix_attrs(sdata) -> dict[str, Any]:
    """The ``sdata.attrs["spatialmix"]`` dictionary (created when missing)."""
    return sdata.attrs.setdefault(ATTRS_KEY, {})


def samples_of(sdata) -> list[str]:
    """Sample names of a project, in the order they were added."""
    meta = sdata.attrs.get(ATTRS_KEY, {}).get("samples")
    if meta:
        return list(meta)
    names = [n[: -len("_spots")] for n in sdata.shapes if n.endswith("_spots")]
    if not names:
        raise ProjectError(
            "This SpatialData holds no '{sample}_spots' shapes, so it is not a napari-spatialmix project. "
            "Build one with spatialmix.pipeline.prepare(...) or spatialmix.io.read_visium(...)"
        )
    return names


def jsonable(obj: Any) -> Any:
    """Plain-Python copy of records for zarr's JSON attrs: numpy scalars / arrays to lists and numbers, paths to
    strings, non-finite floats (not valid JSON) to ``None``."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_project(sdata, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``sdata`` to ``path`` (a ``.zarr`` folder) atomically.

    Parameters
    ----------
    sdata
        The project.
    path
        Target folder; ``.zarr`` is appended when missing.
    overwrite
        Replace an existing project at ``path``. The old one is removed only after the new one is complete.
    """
    path = Path(path)
    if path.suffix != ".zarr":
        path = path.with_name(path.name + ".zarr")
    if path.exists() and not overwrite:
        raise ProjectError(
            f"{path} already exists. Pass overwrite=True (CLI: --overwrite) to replace it, or choose another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    sdata.attrs = jsonable(dict(sdata.attrs))
    try:
        with warnings.catch_warnings():  # a notice about zarr's future defaults, nothing a user can act on
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            sdata.write(tmp, overwrite=False)
    except Exception:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        backup = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        path.rename(backup)
        tmp.rename(path)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        tmp.rename(path)
    return path


def load_project(path: str | Path):
    """Open a project saved with :func:`save_project` (or any SpatialData zarr following the conventions)."""
    import spatialdata as sd

    path = Path(path)
    if not path.exists():
        raise ProjectError(f"No project at {path}. Check the path; projects are folders ending in .zarr")
    try:
        sdata = sd.read_zarr(path)
    except Exception as err:  # zarr raises many kinds of errors for a folder that is not a SpatialData
        raise ProjectError(f"{path} is not a readable SpatialData zarr ({type(err).__name__}: {err})") from err
    samples_of(sdata)  # validates the conventions
    return sdata


def attrs_json(sdata) -> str:
    """The project's provenance and registration records as pretty JSON (for reports)."""
    return json.dumps(jsonable(sdata.attrs.get(ATTRS_KEY, {})), indent=2)
