"""The command line: simulate, demo, and what a bad input does to the outputs."""

from __future__ import annotations

import json
import shutil

import pytest

from spatialmix.cli import main

pytestmark = pytest.mark.slow


def test_demo_writes_project_report_and_overlays(demo_out):
    report = json.loads((demo_out / "report.json").read_text())
    assert report["samples"] == ["P1_S1", "P1_S2", "P2_S1", "P2_S2"]
    assert (demo_out / "project.zarr").is_dir()
    for s in report["samples"]:
        png = demo_out / f"overlay_{s}.png"
        assert png.stat().st_size > 50_000
        assert set(report["registration_rms_um"][s]) == {"msi", "he"}
    shapes = report["table_shapes"]
    assert shapes["rna"][0] == shapes["msi"][0] == shapes["morphology"][0]
    assert "Registration" in (demo_out / "report.md").read_text()


def test_bad_input_is_a_clear_error_and_writes_nothing(sample_data_dir, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir, data)
    ibd = data / "P2_S1" / "msi" / "P2_S1.ibd"
    ibd.unlink()
    out = tmp_path / "out"
    assert main(["--quiet", "demo", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "P2_S1.ibd" in err
    assert not (out / "project.zarr").exists()


def test_simulate_command_writes_a_readable_dataset(tmp_path, capsys):
    assert main(["--quiet", "simulate", "--out", str(tmp_path / "d"), "--samples", "2", "--seed", "7"]) == 0
    assert "wrote 2 samples" in capsys.readouterr().out
    from spatialmix.pipeline import read_samples_csv

    specs = read_samples_csv(tmp_path / "d")
    assert [s.sample for s in specs] == ["P1_S1", "P1_S2"]
    assert all(s.visium.is_dir() and s.imzml.exists() for s in specs)


def test_prepare_refuses_an_existing_project_before_doing_any_work(tmp_path, capsys):
    out = tmp_path / "p.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    assert main(["--quiet", "prepare", str(tmp_path / "no-such-dataset"), "--out", str(out)]) == 2
    assert "already exists. Pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "earlier results"


@pytest.mark.slow
def test_run_command_runs_the_main_job_from_a_config(sample_data_dir, tmp_path, capsys):
    from spatialmix.cli import main
    from spatialmix.config import example_config

    cfg = tmp_path / "run.toml"
    cfg.write_text(example_config(sample_data_dir))
    out = tmp_path / "out"
    assert main(["--quiet", "run", str(cfg), "--out", str(out), "--epochs", "2", "--device", "cpu"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["integration"]["epochs"] == 2
    assert report["config"]["train"]["epochs"] == 2 and report["config"]["model"]["name"] == "mima"
    assert (out / "project.zarr").is_dir() and (out / "metrics.json").exists() and (out / "model" / "model.pt").exists()
    assert sorted(p.name for p in out.glob("results_*.png")) == [f"results_{s}.png" for s in report["samples"]]
    # a second run into the same folder is refused before any work, and the project is kept
    assert main(["--quiet", "run", str(cfg), "--out", str(out), "--epochs", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "project.zarr").is_dir()


def test_run_command_reports_a_bad_config_and_writes_nothing(tmp_path, capsys):
    from spatialmix.cli import main

    cfg = tmp_path / "run.toml"
    cfg.write_text('[data]\nsamples_csv = "nowhere/samples.csv"\n\n[train]\nepochs = 0\n')
    out = tmp_path / "out"
    assert main(["--quiet", "run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "run.toml" in err and ("epochs" in err or "samples.csv" in err)
    assert not out.exists()
