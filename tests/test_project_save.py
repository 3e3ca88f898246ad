"""A save of a project that is killed at any point leaves a readable project, and its leftovers are removed."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from spatialmix.project import load_project, save_project


def _project(n: int = 5, tag: str = "v1"):
    """A minimal project: one sample's spots (circles) and a provenance tag."""
    import geopandas as gpd
    from shapely.geometry import Point
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel

    gdf = gpd.GeoDataFrame({"radius": np.full(n, 27.5)}, geometry=[Point(float(i), 0.0) for i in range(n)])
    spots = ShapesModel.parse(gdf)
    return SpatialData(shapes={"S1_spots": spots}, attrs={"spatialmix": {"samples": {"S1": {}}, "tag": tag}})


def _tag(sdata) -> str:
    return sdata.attrs["spatialmix"]["tag"]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def _load_quietly(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sdata = load_project(path)
    return sdata, [str(w.message) for w in caught if "interrupted" in str(w.message)]


class _Killed(BaseException):
    """Stands for the process dying: nothing after it runs (not even ``except Exception`` handlers)."""


def _kill_at_rename(monkeypatch, n: int):
    """Make the ``n``-th ``Path.rename`` call (1-based) kill the save before it happens."""
    real = Path.rename
    calls = {"n": 0}

    def rename(self, target):
        calls["n"] += 1
        if calls["n"] == n:
            raise _Killed()
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)


def _as_dead_process(path: Path) -> None:
    """Rename this process's leftovers as if they belonged to a process that has exited (pid 2**22 + 1)."""
    import os

    for p in path.parent.iterdir():
        if f"-{os.getpid()}-" in p.name:
            p.rename(p.with_name(p.name.replace(f"-{os.getpid()}-", f"-{2**22 + 1}-")))


# renames of an overwriting save: 1 tmp -> new (written completely), 2 project -> old, 3 new -> project
@pytest.mark.parametrize("kill_at, expected, recovered", [
    (1, "v1", False),  # killed before the new copy was complete: the old project stays, the copy goes
    (2, "v2", True),  # complete new copy, old project still in place: the swap is finished
    (3, "v2", True),  # killed between the two renames (no project at the path): the swap is finished
])
def test_a_save_killed_at_each_rename_leaves_a_readable_project(tmp_path, monkeypatch, kill_at, expected, recovered):
    path = save_project(_project(tag="v1"), tmp_path / "p.zarr")
    with monkeypatch.context() as m:
        _kill_at_rename(m, kill_at)
        with pytest.raises(_Killed):
            save_project(_project(tag="v2"), path, overwrite=True)
    _as_dead_process(path)
    assert _siblings(path), "the kill left the save's folders behind"
    if kill_at == 3:
        assert not path.exists()  # the state the issue describes: both copies only as hidden folders
    sdata, warned = _load_quietly(path)
    assert _tag(sdata) == expected
    assert bool(warned) == recovered
    assert _siblings(path) == []  # every leftover removed


def test_only_the_previous_project_left_is_put_back_with_a_warning(tmp_path):
    path = save_project(_project(tag="v1"), tmp_path / "p.zarr")
    path.rename(path.with_name(f".p.zarr.old-host-{2**22 + 1}-0123abcd"))  # killed with no complete new copy
    (path.parent / f".p.zarr.tmp-host-{2**22 + 1}-4567cdef").mkdir()  # and a half-written one
    import socket

    for p in path.parent.iterdir():  # this machine's leftovers
        p.rename(p.with_name(p.name.replace("-host-", f"-{socket.gethostname().replace('-', '_')}-")))
    sdata, warned = _load_quietly(path)
    assert _tag(sdata) == "v1" and warned and "previous project is back" in warned[0]
    assert _siblings(path) == []


def test_a_killed_write_is_cleaned_by_the_next_save_and_a_running_one_is_left_alone(tmp_path):
    import os
    import socket

    host = socket.gethostname().replace("-", "_")
    path = tmp_path / "p.zarr"
    dead = tmp_path / f".p.zarr.tmp-{host}-{2**22 + 1}-0123abcd"
    running = tmp_path / f".p.zarr.tmp-{host}-{os.getppid()}-4567cdef"  # our parent: a live process
    legacy = tmp_path / ".p.zarr.tmp-89abcdef"  # an earlier version's name
    for p in (dead, running, legacy):
        (p / "rna").mkdir(parents=True)
    os.utime(legacy, (1, 1))  # long ago
    save_project(_project(), path)
    assert _siblings(path) == [running.name]
    assert _tag(load_project(path)) == "v1"


def test_ctrl_c_while_writing_removes_the_half_written_copy(tmp_path, monkeypatch):
    path = save_project(_project(tag="v1"), tmp_path / "p.zarr")
    sdata = _project(tag="v2")

    def interrupted_write(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(sdata), "write", interrupted_write)
    with pytest.raises(KeyboardInterrupt):
        save_project(sdata, path, overwrite=True)
    assert _siblings(path) == []
    assert _tag(load_project(path)) == "v1"
