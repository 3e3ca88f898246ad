"""Calibration: the paper's form of the losses and reconstructors against the earlier implementation (issue 17).

Variants (each trained on the simulated batches of ``tests/test_calibration.py::calib_data``, 4 classes,
2 labelled source batches, 60 epochs, CPU, 1 thread):

- ``before``: MMD^2 *summed* over batch pairs, bandwidth not detached, reconstructors Linear-LeakyReLU-Linear
  (the code before issue 17);
- ``default``: MMD^2 *averaged* over batch pairs (eq. 1), reconstructors FC-dropout-Tanhshrink-FC (both the
  paper's), bandwidth not detached (ours): the current default;
- ``paper``: as ``default`` with ``detach_bandwidth=True`` (the paper's reference in every respect);
- ``default_alpha_x_pairs``: as ``default`` with alpha1 = alpha2 = 10 x the number of pairs (the summed loss's
  scale: does the mean need a larger weight?).

Figures: kNN (15) batch accuracy of C(x) (chance 1 / n_batches), target macro-F1 of D(C(x)), the MSI class-mean
error ratio of R_B0(C(x)) vs raw (as in the test), and the mean per-feature standard deviation of C(x) (a
collapse of the calibrated space shows as a value near 0). Writes ``benchmarks/results/calibration_paper_form.json``.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/calibration_paper_form.py [--batches 4 8] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from sklearn.metrics import f1_score  # noqa: E402

import spatialmix.models._calibration_module as cm  # noqa: E402
from spatialmix.models.calibration import Calibration  # noqa: E402
from test_calibration import calib_data, knn_batch_accuracy  # noqa: E402

PAPER = {"pairwise_mmd": cm.pairwise_mmd, "mmd2": cm.mmd2, "Reconstructor": cm.Reconstructor}


def _mmd2_not_detached(x, y, bandwidths=cm.MMD_BANDWIDTHS, **_):
    z = torch.cat([x, y], dim=0)
    d2 = torch.cdist(z, z).pow(2)
    n = z.shape[0]
    base = (d2.sum() / max(n * n - n, 1)).clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (base * b)) for b in bandwidths)
    nx = x.shape[0]
    return k[:nx, :nx].mean() + k[nx:, nx:].mean() - 2 * k[:nx, nx:].mean()


def _pairwise_sum(z, batch, n_batches, min_spots=2, **_):
    present = [b for b in range(n_batches) if int((batch == b).sum()) >= min_spots]
    total = z.new_zeros(())
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            total = total + cm.mmd2(z[batch == a], z[batch == b])
    return total


class _LeakyReconstructor(nn.Module):
    def __init__(self, n_features, dropout=0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, n_features), nn.LeakyReLU(0.2),
                                 nn.Linear(n_features, n_features))

    def forward(self, z):
        return self.net(z)


VARIANTS = {
    "before": {"pairwise_mmd": _pairwise_sum, "mmd2": _mmd2_not_detached, "Reconstructor": _LeakyReconstructor},
    "default": {},
    "paper": {"params": {"detach_bandwidth": True}},
    "default_alpha_x_pairs": {"alpha_x_pairs": True},
}


def run(variant: str, n_batches: int, seed: int, epochs: int) -> dict:
    patch = VARIANTS[variant]
    for k, v in PAPER.items():
        setattr(cm, k, patch.get(k, v))
    try:
        data = calib_data(n_classes=4, n_batches=n_batches)
        n_pairs = n_batches * (n_batches - 1) // 2
        kw = {"alpha1": 10.0 * n_pairs, "alpha2": 10.0 * n_pairs} if patch.get("alpha_x_pairs") else {}
        kw.update(patch.get("params", {}))
        model = Calibration(data, seed=seed, **kw)
        t0 = time.perf_counter()
        model.train(epochs=epochs, step_events=False, seed=seed)
        seconds = time.perf_counter() - t0
        b = data.obs["batch"].to_numpy()
        truth = data.obs["truth"].to_numpy()
        src = np.isin(b, ["B0", "B1"])
        z = model.get_latent_representation()
        f1 = f1_score(truth[~src], model.predict_labels()["label"].astype(str)[~src], average="macro")
        raw = data.dense("msi")
        cor = model.get_corrected("msi")

        def err(y):
            return np.mean([np.abs(y[(b == bb) & (truth == c)].mean(0) - raw[(b == "B0") & (truth == c)].mean(0)).mean()
                            for c in np.unique(truth) for bb in sorted(set(b) - {"B0"})])

        last = model.training_curve().iloc[-1] if hasattr(model.training_curve(), "iloc") else None
        return {"variant": variant, "n_batches": n_batches, "seed": seed, "epochs": epochs,
                "knn_batch_accuracy": knn_batch_accuracy(z, b), "target_f1": float(f1),
                "msi_error_ratio_B0": float(err(cor) / err(raw)), "z_std": float(z.std(axis=0).mean()),
                "final_mmd_b": None if last is None else float(last.get("mmd_b", np.nan)),
                "seconds": seconds}
    finally:
        for k, v in PAPER.items():
            setattr(cm, k, v)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, nargs="+", default=[4])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "calibration_paper_form.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for nb in args.batches:
        for variant in args.variants:
            for seed in args.seeds:
                r = run(variant, nb, seed, args.epochs)
                rows.append(r)
                print(json.dumps(r), flush=True)
    summary = {}
    for nb in args.batches:
        for variant in args.variants:
            rs = [r for r in rows if r["variant"] == variant and r["n_batches"] == nb]
            summary[f"{nb}/{variant}"] = {k: [round(min(r[k] for r in rs), 3), round(float(np.mean([r[k] for r in rs])), 3),
                                              round(max(r[k] for r in rs), 3)]
                                          for k in ("knn_batch_accuracy", "target_f1", "msi_error_ratio_B0", "z_std")}
    print("min / mean / max over seeds")
    for k, v in summary.items():
        print(k, v)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
