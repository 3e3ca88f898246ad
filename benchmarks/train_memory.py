"""Training memory with sparse inputs kept sparse (``SparseRows``, one dense mini-batch at a time) beside the
previous dense copy of every modality (issue 16, item 2), same data, same model, each in a fresh process.

For each variant a child process builds :func:`train_speed.synthetic_data` (CSR RNA and MSI), resets the
peak-RSS counter (``VmHWM``), trains a default MIMA for ``--steps`` optimiser steps (batch 128, every spot,
no validation) and reports the peak resident memory above the level just before training and the seconds per
step. ``dense`` reproduces the previous behaviour by giving the engine dense tensors of every modality
(``MIMA._tensors``, what training used before). Both must reach the same loss.

Run: ``PYTHONPATH=src python benchmarks/train_memory.py [--spots-per-sample 1250] [--genes 10000] [--msi 4000]
[--steps 30] [--out benchmarks/results/train_memory.json]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_speed import add_shape_arguments  # noqa: E402
MB = 1024**2


def child(variant: str, args) -> dict:
    import torch

    from spatialmix._resources import reset_peak, status_bytes
    from spatialmix.models import MIMA
    from train_speed import input_bytes, synthetic_data

    torch.set_num_threads(args.threads)
    data = synthetic_data(args.samples, args.spots_per_sample, args.genes, args.msi)
    model = MIMA(data)
    if variant == "dense":  # the previous behaviour: every modality as one dense tensor for the whole training
        def dense_tensors():
            t = model._tensors(model.data)
            t.pop("_known_batch")
            return t
        model._training_tensors = dense_tensors
    reset_peak()
    before = status_bytes("VmRSS")
    t0 = time.perf_counter()
    model.train(max_steps=args.steps, epochs=1, train_fraction=1.0, seed=0, step_events=False)
    seconds = time.perf_counter() - t0
    return {"variant": variant, "peak_above_start_mb": round((status_bytes("VmHWM") - before) / MB, 1),
            "seconds_per_step": round(seconds / args.steps, 3), "final_loss": model.history[-1]["loss"],
            "inputs_as_held_mb": round(input_bytes(data) / MB, 1),
            "inputs_dense_mb": round(sum(data.n_obs * len(data.var_names[m]) * 4 for m in data.modalities) / MB, 1),
            "n_spots": int(data.n_obs), "features": {m: len(data.var_names[m]) for m in data.modalities}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(ap)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--child", choices=["sparse", "dense"])
    ap.add_argument("--out", default=str(HERE / "results" / "train_memory.json"))
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args)))
        return {}
    res = {}
    for variant in ("sparse", "dense"):
        cmd = [sys.executable, __file__, "--child", variant] + [
            f"--{k.replace('_', '-')}={getattr(args, k)}" for k in ("samples", "spots_per_sample", "genes", "msi",
                                                                    "steps", "threads")]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        res[variant] = json.loads(out)
        print(variant, res[variant], flush=True)
    summary = {"results": res, "peak_ratio_dense_to_sparse": round(
        res["dense"]["peak_above_start_mb"] / max(res["sparse"]["peak_above_start_mb"], 1.0), 2),
        "step_time_ratio_dense_to_sparse": round(
        res["dense"]["seconds_per_step"] / res["sparse"]["seconds_per_step"], 2),
        "same_loss": abs(res["dense"]["final_loss"] - res["sparse"]["final_loss"]) <= 1e-4 * abs(
            res["dense"]["final_loss"])}
    print(json.dumps({k: v for k, v in summary.items() if k != "results"}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
