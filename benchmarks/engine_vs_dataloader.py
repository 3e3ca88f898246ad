"""The training engine beside a plain ``torch.utils.data`` loop, same MIMA network, same data, same run (issue 16).

The reference codes of the seed papers train with a ``Dataset`` whose ``__getitem__`` returns one row per
modality, a ``DataLoader`` (batch 128, shuffled, default collate) and a loop that calls ``loss.item()`` every
step. Here the same :class:`~spatialmix.models.MIMA` module (default parameters, same seed, so the same
initial weights) is trained for a few epochs over every spot (no validation split, so both do the same work):

- ``engine``: :func:`spatialmix.train.iter_train` (``train_fraction=1``), the way every spatialmix model trains;
- ``dataloader_dense``: a per-row ``Dataset`` over the dense float32 matrices;
- ``dataloader_sparse``: a per-row ``Dataset`` that densifies one CSR row of RNA / MSI per item (what a loop
  that keeps the sparse input does).

Data: :func:`train_speed.synthetic_data` at the bundled sample's shapes (4 samples, 1,290 spots, 1,500 genes,
526 m/z, 67 morphology features; ``--scale medium``: 8 x 1,000 spots, 5,000 genes, 2,000 m/z), or a development
case (``--case starmap``: the real STARmap cells, two views of 79 genes, where a step is small and the loop's
per-row collation weighs most). Reported: the
median seconds per epoch of each (the first epoch is a warm-up and dropped), the ratios to the engine, and the
final training loss of each (same order of magnitude: the loops train the same thing). Ratios only: absolute
CPU times depend on the machine.

Run: ``PYTHONPATH=src python benchmarks/engine_vs_dataloader.py [--epochs 4] [--threads 1] [--scale small]
[--case starmap] [--out benchmarks/results/engine_vs_dataloader.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

SCALES = {"small": dict(n_samples=4, spots_per_sample=323, n_genes=1500, n_msi=526),
          "medium": dict(n_samples=8, spots_per_sample=1000, n_genes=5000, n_msi=2000)}


def make_model(data, seed: int):
    import torch

    from spatialmix.models import MIMA

    torch.manual_seed(seed)
    return MIMA(data)


def run_engine(data, *, epochs: int, seed: int) -> dict:
    model = make_model(data, seed)
    model.train(epochs=epochs, lr=1e-3, batch_size=128, train_fraction=1.0, seed=seed, early_stopping=False)
    done = [h for h in model.history if "loss" in h]
    return {"epoch_seconds": [h["seconds"] for h in done], "final_loss": done[-1]["loss"]}


class RowDataset:
    """One spot per item: every modality's row, its mask and the batch code (dense or densified CSR rows)."""

    def __init__(self, model, data, sparse: bool):
        import scipy.sparse as sp

        self.mods = model.modalities
        self.X = {m: (data.X[m].tocsr() if sparse and sp.issparse(data.X[m]) else data.dense(m)) for m in self.mods}
        self.mask = {m: np.asarray(data.mask[m], bool) for m in self.mods}
        self.batch = model._batch_codes(data)

    def __len__(self):
        return len(self.batch)

    def __getitem__(self, i):
        import torch

        out = {}
        for m in self.mods:
            row = self.X[m][i]
            row = row.toarray()[0] if hasattr(row, "toarray") else row
            out[f"x_{m}"] = torch.as_tensor(np.asarray(row, dtype=np.float32))
            out[f"mask_{m}"] = torch.as_tensor(self.mask[m][i])
        out["batch"] = torch.as_tensor(int(self.batch[i]))
        return out


def run_dataloader(data, *, epochs: int, seed: int, sparse: bool) -> dict:
    import torch
    from torch.utils.data import DataLoader

    model = make_model(data, seed)
    module = model.module
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    loader = DataLoader(RowDataset(model, data, sparse), batch_size=128, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    seconds, last = [], float("nan")
    module.train()
    for _ in range(epochs):
        t0 = time.perf_counter()
        total, n = 0.0, 0
        for batch in loader:
            loss, _terms = module(batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            w = len(batch["batch"])
            total += loss.item() * w  # what the reference loops do every step
            n += w
        seconds.append(time.perf_counter() - t0)
        last = total / n
    return {"epoch_seconds": seconds, "final_loss": last}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scale", choices=list(SCALES), default="small")
    ap.add_argument("--case", default=None, help="a development case (spatialmix.datasets.CASES, e.g. starmap: "
                    "3,704 cells, two views of 79 genes) instead of the synthetic shapes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "results" / "engine_vs_dataloader.json"))
    args = ap.parse_args(argv)

    import torch

    from train_speed import synthetic_data

    torch.set_num_threads(args.threads)
    if args.case:
        from _cases import case_data

        data = case_data(args.case)
    else:
        data = synthetic_data(**SCALES[args.scale], seed=args.seed)
    res = {}
    for name, fn in (("engine", lambda: run_engine(data, epochs=args.epochs, seed=args.seed)),
                     ("dataloader_dense", lambda: run_dataloader(data, epochs=args.epochs, seed=args.seed,
                                                                  sparse=False)),
                     ("dataloader_sparse", lambda: run_dataloader(data, epochs=args.epochs, seed=args.seed,
                                                                   sparse=True))):
        r = fn()
        r["median_epoch_s"] = statistics.median(r["epoch_seconds"][1:] or r["epoch_seconds"])
        res[name] = r
        print(f"{name:18s} median s/epoch {r['median_epoch_s']:.3f}  final loss {r['final_loss']:.4g}", flush=True)
    eng = res["engine"]["median_epoch_s"]
    ratios = {k: round(v["median_epoch_s"] / eng, 2) for k, v in res.items() if k != "engine"}
    print("slower than the engine, per epoch:", ratios)
    shapes = ({m: int(data.X[m].shape[1]) for m in data.modalities} if args.case else SCALES[args.scale])
    out = {"scale": args.case or args.scale, "shapes": shapes, "n_spots": int(data.n_obs), "epochs": args.epochs,
           "threads": args.threads, "device": "cpu", "torch": torch.__version__, "machine": platform.processor() or
           platform.machine(), "results": res, "ratio_to_engine": ratios,
           "engine_at_least_3x_faster": bool(min(ratios.values()) >= 3.0)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print("wrote", args.out)
    return out


if __name__ == "__main__":
    main()
