"""Session fixtures shared by the pipeline, CLI and napari tests (imported by conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def sample_data_dir() -> Path:
    path = ROOT / "sample_data"
    if not (path / "samples.csv").exists():
        pytest.fail("sample_data/ is missing: regenerate it with `spatialmix simulate --out sample_data`")
    return path


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory, sample_data_dir) -> Path:
    """One run of `spatialmix demo` (the headless main job) shared by the tests that read its outputs.

    ``SPATIALMIX_TEST_DEMO_OUT`` names an existing demo output folder to reuse instead (local iteration only;
    CI always runs the demo)."""
    import os

    from spatialmix.cli import main

    if os.environ.get("SPATIALMIX_TEST_DEMO_OUT"):
        return Path(os.environ["SPATIALMIX_TEST_DEMO_OUT"])

    import _claims

    out = tmp_path_factory.mktemp("demo")
    assert main(["--quiet", "demo", "--data", str(sample_data_dir), "--out", str(out), "--seed", str(_claims.seed())]) == 0
    return out


@pytest.fixture(scope="session")
def prepared(demo_out):
    """The prepared project (reopened from the demo's zarr)."""
    from spatialmix.project import load_project

    return load_project(demo_out / "project.zarr")


@pytest.fixture(scope="session")
def saved_project(demo_out) -> Path:
    return demo_out / "project.zarr"
