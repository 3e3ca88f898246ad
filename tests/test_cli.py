"""The command line: simulate, demo, and what a bad input does to the outputs."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


# a run that prepares in seconds (2 samples, RNA + MSI, no registration) and trains a tiny MIMA long enough to stop
_QUICK_RUN = """
[data]
annotation_key = "pathologist"
{samples}
[prepare]
register = false

[model]
name = "mima"
modalities = ["rna", "msi"]
n_latent = 4
n_hidden = 8
direct_max_features = 0
adversarial = 0.0

[train]
epochs = 25
batch_size = 128
device = "cpu"
seed = 0

[outputs]
rgb = false
figures = false
metrics = false
corrected = false
"""


def _quick_run_config(sample_data_dir: Path, path: Path) -> Path:
    samples = ""
    for name, patient in (("P1_S1", "P1"), ("P2_S1", "P2")):
        d = sample_data_dir / name
        samples += (f'\n[[samples]]\nname = "{name}"\npatient = "{patient}"\nvisium = "{d / "outs"}"\n'
                    f'imzml = "{d / "msi" / f"{name}.imzML"}"\nmsi_pixel_size_um = 50.0\n'
                    f'annotations = "{d / "annotations.csv"}"\n')
    path.write_text(_QUICK_RUN.format(samples=samples))
    return path


def _stop_when_training(cmd: list[str], sig: int, *, timeout: float = 90.0) -> tuple[int, str]:
    """Run the CLI in a subprocess, send ``sig`` once training is in its second epoch, return (status, stderr)."""
    import spatialmix

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(spatialmix.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    # a shell's background job ignores SIGINT, and a child inherits that: give the CLI Python's usual Ctrl-C
    proc = subprocess.Popen([sys.executable, "-m", "spatialmix.cli", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read1(4096), b"")), daemon=True)
    reader.start()
    start = time.monotonic()
    try:
        while b"epoch 2/" not in b"".join(chunks):  # a step of epoch 2: epoch 1 is complete
            assert proc.poll() is None, b"".join(chunks).decode(errors="replace")[-3000:]
            assert time.monotonic() - start < timeout, "training did not start in time"
            time.sleep(0.05)
        proc.send_signal(sig)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    return status, b"".join(chunks).decode(errors="replace")


@pytest.mark.parametrize("sig, status, how", [(signal.SIGINT, 130, "Ctrl-C (SIGINT)"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stopped_run_keeps_its_project_and_last_epoch_and_resumes(sample_data_dir, tmp_path, sig, status, how):
    import torch

    from spatialmix.project import load_project

    cfg = _quick_run_config(sample_data_dir, tmp_path / "run.toml")
    out = tmp_path / "out"
    code, err = _stop_when_training(["run", str(cfg), "--out", str(out)], sig)
    last = err.strip().splitlines()[-1]
    assert code == status, err[-3000:]
    assert "Traceback" not in err
    assert last.startswith(f"spatialmix: stopped by {how}; the prepared project is saved in {out / 'project.zarr'}")
    ckpt_path = out / "checkpoints" / "last.ckpt"
    assert str(ckpt_path) in last
    ckpt = torch.load(ckpt_path, weights_only=False)
    assert ckpt["epoch"] >= 1 and not ckpt.get("finished") and f"(epoch {ckpt['epoch']})" in last
    project = load_project(out / "project.zarr")
    assert {"rna", "msi"} <= set(project.tables)
    resume = last.split("Resume with: ", 1)[1]
    assert resume == f"spatialmix run {shlex.quote(str(cfg))} --out {shlex.quote(str(out))} --resume"
    # the resume command continues from the checkpoint and finishes the job
    assert main(["--quiet", *shlex.split(resume)[1:]]) == 0
    curve = (out / "training_curve.csv").read_text().splitlines()
    assert len(curve) == 1 + 25  # header + every epoch, the ones before the stop included
    assert json.loads((out / "report.json").read_text())["integration"]["epochs"] == 25
    assert torch.load(ckpt_path, weights_only=False)["finished"]
    assert "mima" in load_project(out / "project.zarr").attrs["spatialmix"]["models"]
