"""The built wheel carries the npe2 manifest and the bundled sample data, and registers both entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_manifest_sample_data_and_entry_points(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("napari_spatialmix-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        manifest = zf.read("spatialmix/napari.yaml").decode()
        entry_points = zf.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert manifest == (ROOT / "napari.yaml").read_text()
    assert "spatialmix/sample_data/samples.csv" in names
    assert "spatialmix/sample_data/P2_S2/msi/P2_S2.ibd" in names
    assert "napari-spatialmix = spatialmix:napari.yaml" in entry_points
    assert "spatialmix = spatialmix.cli:main" in entry_points
    from npe2 import PluginManifest

    mf = PluginManifest.from_file(ROOT / "napari.yaml")
    assert mf.name == "napari-spatialmix"
    assert {r.command for r in mf.contributions.readers} >= {"napari-spatialmix.get_project_reader",
                                                             "napari-spatialmix.get_imzml_reader"}
