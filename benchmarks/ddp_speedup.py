"""Lightning Fabric DDP on CPU: the same MIMA training in N processes beside one process (issue 16, item 5).

One process trains with mini-batches of ``N x batch`` rows; N processes (``torchrun``, gloo, one thread each)
train with ``batch`` rows per process, so every step sees the same rows in both (the engine gives rank r the
rows r, r + N, ... of the same shuffled order) and the gradient is averaged over the processes. The results are
not bit-identical (each process draws its own latent samples and dropout masks, and a masked mean per process
is averaged instead of one masked mean over all rows), so what is compared is what a user would look at: the
training and validation loss per epoch, and how well the two embeddings agree (the mean fraction of each spot's
15 nearest neighbours shared by the two embeddings). Reported: median seconds per epoch (the first epoch
dropped), the speed-up, and those agreements.

Data: :func:`train_speed.synthetic_data` (default 8 samples x 1,000 spots, 3,000 genes, 1,000 m/z, 67
morphology features). On this 2-core machine N = 2 is the most that can run in parallel.

Run: ``PYTHONPATH=src python benchmarks/ddp_speedup.py [--processes 2] [--epochs 4]
[--out benchmarks/results/ddp_speedup.json]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHAPE = dict(n_samples=8, spots_per_sample=1000, n_genes=3000, n_msi=1000)


def train(devices: int, batch: int, epochs: int, out: Path, seed: int = 0) -> None:
    """Train and write this process's record (rank 0 also the embedding)."""
    import torch

    torch.set_num_threads(1)
    from spatialmix.models import MIMA
    from train_speed import synthetic_data

    data = synthetic_data(SHAPE["n_samples"], SHAPE["spots_per_sample"], SHAPE["n_genes"], SHAPE["n_msi"], seed=0)
    torch.manual_seed(seed)
    model = MIMA(data)
    kwargs = dict(epochs=epochs, lr=1e-3, batch_size=batch, seed=seed, early_stopping=False, device="cpu")
    if devices > 1:
        kwargs.update(devices=devices, strategy="ddp")
    t0 = time.perf_counter()
    model.train(**kwargs)
    wall = time.perf_counter() - t0
    rank = int(os.environ.get("RANK", "0"))
    done = [h for h in model.history if "loss" in h]
    record = {"rank": rank, "devices": devices, "batch_per_process": batch, "wall_s": wall,
              "epoch_seconds": [h["seconds"] for h in done], "loss": [h["loss"] for h in done],
              "val_loss": [h.get("val_loss") for h in done]}
    (out / f"ddp{devices}_s{seed}_rank{rank}.json").write_text(json.dumps(record))
    if rank == 0:
        np.save(out / f"ddp{devices}_s{seed}_latent.npy", model.get_latent_representation())


def knn_agreement(a: np.ndarray, b: np.ndarray, k: int = 15) -> float:
    from sklearn.neighbors import NearestNeighbors

    ia = NearestNeighbors(n_neighbors=k + 1).fit(a).kneighbors(a, return_distance=False)[:, 1:]
    ib = NearestNeighbors(n_neighbors=k + 1).fit(b).kneighbors(b, return_distance=False)[:, 1:]
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ia, ib)]))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128, help="rows per process and step")
    ap.add_argument("--work", default="/tmp/spatialmix-ddp-speedup")
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--spots-per-sample", type=int, default=SHAPE["spots_per_sample"])
    ap.add_argument("--genes", type=int, default=SHAPE["n_genes"])
    ap.add_argument("--msi", type=int, default=SHAPE["n_msi"])
    ap.add_argument("--out", default=str(HERE / "results" / "ddp_speedup.json"))
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    SHAPE.update(spots_per_sample=args.spots_per_sample, n_genes=args.genes, n_msi=args.msi)
    shape_args = ["--spots-per-sample", str(args.spots_per_sample), "--genes", str(args.genes), "--msi", str(args.msi)]
    if args.worker:
        train(args.worker, args.batch, args.epochs, work, args.seed)
        return {}
    from train_speed import write_report

    n = args.processes
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")])}
    print(f"1 process, batch {n * args.batch} ...", flush=True)
    subprocess.run([sys.executable, __file__, "--worker", "1", "--batch", str(n * args.batch), "--epochs",
                    str(args.epochs), "--work", str(work), *shape_args], check=True, env=env)
    print(f"{n} processes (DDP), batch {args.batch} each ...", flush=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_port",
                    "29533", __file__, "--worker", str(n), "--batch", str(args.batch), "--epochs", str(args.epochs),
                    "--work", str(work), *shape_args], check=True, env=env)
    print("1 process, batch {}, another seed (how much two ordinary runs agree) ...".format(n * args.batch), flush=True)
    subprocess.run([sys.executable, __file__, "--worker", "1", "--batch", str(n * args.batch), "--epochs",
                    str(args.epochs), "--work", str(work), "--seed", "1", *shape_args], check=True, env=env)
    one = json.loads((work / "ddp1_s0_rank0.json").read_text())
    many = [json.loads((work / f"ddp{n}_s0_rank{r}.json").read_text()) for r in range(n)]
    other = json.loads((work / "ddp1_s1_rank0.json").read_text())

    def per_epoch(rec):
        return statistics.median(rec["epoch_seconds"][1:] or rec["epoch_seconds"])

    s1, sn = per_epoch(one), per_epoch(many[0])
    z1 = np.load(work / "ddp1_s0_latent.npy")
    agree = knn_agreement(z1, np.load(work / f"ddp{n}_s0_latent.npy"))
    yardstick = knn_agreement(z1, np.load(work / "ddp1_s1_latent.npy"))  # one process, another seed
    out = {"benchmark": "ddp_speedup", "shape": SHAPE, "epochs": args.epochs, "processes": n,
           "one_process": {"batch": n * args.batch, "s_per_epoch": round(s1, 2), "loss": one["loss"],
                           "val_loss": one["val_loss"]},
           "ddp": {"batch_per_process": args.batch, "s_per_epoch": round(sn, 2), "loss": many[0]["loss"],
                   "val_loss": many[0]["val_loss"]},
           "speedup": round(s1 / sn, 2),
           "final_loss_ratio_ddp_to_one": round(many[0]["loss"][-1] / one["loss"][-1], 3),
           "knn15_agreement_of_embeddings": round(agree, 3),
           "knn15_agreement_one_process_two_seeds": round(yardstick, 3),
           "final_loss_other_seed": other["loss"][-1],
           "threads_per_process": 1, "cpus": os.cpu_count()}
    write_report(out, args.out, indent=1)
    return out


if __name__ == "__main__":
    main()
