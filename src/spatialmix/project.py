"""Saving and reopening a napari-spatialmix project (one SpatialData zarr holding every sample and result).

Saving is atomic: the zarr is written next to the target under a temporary name and moved into place only
when complete, so an error, a full disk or a killed process never leaves a half-written project or destroys the
previous one (a kill between the two renames of the swap is undone or finished by the next load or save).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
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

    The project is written under a temporary name (``.NAME.tmp-…``), renamed ``.NAME.new-…`` once complete, and
    swapped in. A process killed at any point leaves either the old or the new project readable:
    :func:`load_project` (and the next save) finishes or undoes an interrupted swap and removes the leftovers.
    """
    path = Path(path)
    if path.suffix != ".zarr":
        path = path.with_name(path.name + ".zarr")
    recover_project(path)
    if path.exists() and not overwrite:
        raise ProjectError(
            f"{path} already exists. Pass overwrite=True (CLI: --overwrite) to replace it, or choose another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    sdata.attrs = jsonable(dict(sdata.attrs))
    try:
        with warnings.catch_warnings():  # a notice about zarr's future defaults, nothing a user can act on
            warnings.filterwarnings("ignore", message="zarr v3 autosharding")
            sdata.write(tmp, overwrite=False)
    except BaseException:  # an error, Ctrl-C or SIGTERM: the half-written copy goes, the old project stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    new = _sibling(path, "new")
    tmp.rename(new)  # from here on the new project is complete: recovery rolls the swap forward
    _swap_in(new, path)
    from spatialmix.lazy import open_saved_layers

    open_saved_layers(sdata, path)  # lazy layers now read what was saved, not the model or a replaced folder
    return path


# --- leftovers of interrupted saves ------------------------------------------------------------------------
# A save owns three kinds of sibling folders, named ``.{name}.{kind}-{host}-{pid}-{random}``:
#   tmp: being written (incomplete: always removed once its owner is gone),
#   new: complete, waiting to be swapped in,
#   old: the previous project, moved away for the swap.
_KINDS = ("tmp", "new", "old")
_FOREIGN_AGE_S = 24 * 3600  # leftovers of another machine (shared disk) are only touched when this old


def _host() -> str:
    """This machine's name as it appears in a leftover's name (no '-', the name's separator)."""
    return socket.gethostname().replace("-", "_") or "host"


def _sibling(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _swap_in(new: Path, path: Path) -> None:
    """Move the complete project ``new`` to ``path``, the previous one (if any) away and then deleted."""
    if path.exists():
        old = _sibling(path, "old")
        path.rename(old)
        new.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(path)


def _leftovers(path: Path) -> dict[str, list[Path]]:
    """Sibling folders of ``path`` left by saves whose process is gone (never those of a save still running)."""
    found: dict[str, list[Path]] = {k: [] for k in _KINDS}
    if not path.parent.is_dir():
        return found
    prefix = f".{path.name}."
    me = _host()
    for p in path.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        kind, _, owner = p.name[len(prefix):].partition("-")
        if kind not in _KINDS:
            continue
        parts = owner.split("-")
        if len(parts) == 3 and parts[1].isdigit():  # host-pid-random
            host, pid = parts[0], int(parts[1])
            gone = not _alive(pid) if host == me else _age(p) > _FOREIGN_AGE_S
        else:  # an older version's name (kind-random): its save is long over unless it is very recent
            gone = _age(p) > 60
        if gone:
            found[kind].append(p)
    for kind in found:
        found[kind].sort(key=lambda q: q.stat().st_mtime)
    return found


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _age(p: Path) -> float:
    try:
        return time.time() - p.stat().st_mtime
    except OSError:
        return 0.0


def recover_project(path: str | Path) -> Path | None:
    """Finish or undo a save of ``path`` that was killed half-way, and remove its leftovers.

    - A complete new project waiting to be swapped in (killed between writing and swapping) is swapped in.
    - With no project at ``path`` and only the previous one moved away (killed between the two renames), the
      previous one is put back.
    - Half-written copies are removed.

    Each recovery is reported with a warning. Returns ``path`` when a project was put there, else None.
    """
    path = Path(path)
    found = _leftovers(path)
    restored = None
    if found["new"]:
        newest = found["new"].pop()
        _swap_in(newest, path)
        restored = newest
        warnings.warn(f"{path}: a save of this project was interrupted after it was written completely; it is now "
                      "in place (the project that save replaced is removed)", stacklevel=2)
    elif not path.exists() and found["old"]:
        newest = found["old"].pop()
        newest.rename(path)
        restored = newest
        warnings.warn(f"{path}: a save of this project was interrupted before the new copy was complete; the "
                      "previous project is back in place (the interrupted save is lost: save again)", stacklevel=2)
    for p in (q for kind in _KINDS for q in found[kind]):
        shutil.rmtree(p, ignore_errors=True)
    return path if restored is not None else None


def load_project(path: str | Path):
    """Open a project saved with :func:`save_project` (or any SpatialData zarr following the conventions).

    A save that was killed half-way is finished or undone first (:func:`recover_project`, with a warning).
    Layers too large for memory (:mod:`spatialmix.lazy`) open lazily: read block by block when used."""
    path = Path(path)
    recover_project(path)
    if not path.exists():
        raise ProjectError(f"No project at {path}. Check the path; projects are folders ending in .zarr")
    try:
        sdata = _read(path)
    except Exception as err:  # zarr raises many kinds of errors for a folder that is not a SpatialData
        raise ProjectError(f"{path} is not a readable SpatialData zarr ({type(err).__name__}: {err})") from err
    samples_of(sdata)  # validates the conventions
    return sdata


def _read(path: Path):
    """``spatialdata.read_zarr``, except that a table holding a layer too large for memory (Visium HD results,
    :mod:`spatialmix.lazy`) is opened with that layer lazy: SpatialData reads every table whole."""
    import spatialdata as sd

    from spatialmix.lazy import read_table_lazily, tables_with_large_layers

    large = tables_with_large_layers(path)
    if not large:
        return sd.read_zarr(path)
    sdata = sd.read_zarr(path, selection=("images", "labels", "points", "shapes"))
    for t in sorted(p.name for p in (path / "tables").iterdir() if p.is_dir() and not p.name.startswith(".")):
        sdata.tables[t] = read_table_lazily(path / "tables" / t)
    return sdata


def attrs_json(sdata) -> str:
    """The project's provenance and registration records as pretty JSON (for reports)."""
    return json.dumps(jsonable(sdata.attrs.get(ATTRS_KEY, {})), indent=2)
