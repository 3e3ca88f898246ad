"""Memory and time of one MIMA output (the batch-corrected MSI) with chunk-wise densification, beside the
previous path that densified every modality of the whole dataset for each output call (issue 16, item 3).

The same trained model, the same data, one process: for each path the peak resident memory above the level
just before the call (a psutil sampling thread, 10 ms) and the wall time, the chunked path first; the outputs
must be equal. The previous path is reproduced here (``whole_matrix_infer``: ``model._tensors(data)`` once, then
the same chunks), since the model no longer has it.

Data: :func:`train_speed.synthetic_data` (CSR RNA and MSI, dense morphology), default 16 x 1,250 = 20,000
spots x 10,000 genes + 4,000 m/z; the model trains 2 optimiser steps (the values do not matter, the shapes do).

Run: ``PYTHONPATH=src python benchmarks/output_memory.py [--spots-per-sample 1250] [--genes 10000] [--msi 4000]
[--out benchmarks/results/output_memory.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from train_speed import add_shape_arguments, measured_call  # noqa: E402
MB = 1024**2


def whole_matrix_infer(model, data, fn, batch_size: int = 4096):
    """The previous ``MIMA._infer``: every modality of the whole dataset as one dense tensor, then chunks."""
    t = model._tensors(data, device="cpu")

    def step(sl, device):
        xs = [t[f"x_{m}"][sl].to(device) for m in model.modalities]
        masks = [t[f"mask_{m}"][sl].to(device) for m in model.modalities]
        return fn(xs, masks, t["batch"][sl].to(device))

    return model._in_chunks(data.n_obs, step, batch_size=batch_size)


def measured(call, sampler):
    out, fig = measured_call(call, sampler)
    return out, {"seconds": fig["seconds"], "peak_above_start_mb": fig["peak_above_start_mb"]}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(ap)
    ap.add_argument("--out", default=str(HERE / "results" / "output_memory.json"))
    args = ap.parse_args(argv)

    import torch

    from spatialmix.data import measured_only
    from spatialmix.models import MIMA
    from train_speed import RSSSampler, input_bytes, synthetic_data, write_report

    torch.set_num_threads(args.threads)
    data = synthetic_data(args.samples, args.spots_per_sample, args.genes, args.msi)
    model = MIMA(data)
    model.train(max_steps=2, epochs=1, train_fraction=1.0)
    sampler = RSSSampler(interval=0.01)
    sampler.start()
    i = model.modalities.index("msi")

    def fn(xs, ms, b):
        return model.module.reconstruct(xs, ms, b, modality=i, with_batch=False)

    chunked, new = measured(lambda: model.get_corrected("msi"), sampler)
    whole, old = measured(lambda: measured_only(whole_matrix_infer(model, data, fn), data, ["msi"]), sampler)
    sampler.stop()
    same = bool(np.array_equal(np.isnan(chunked), np.isnan(whole)) and np.allclose(
        np.nan_to_num(chunked), np.nan_to_num(whole), atol=1e-6))
    dense_inputs_mb = sum(data.n_obs * len(data.var_names[m]) * 4 for m in data.modalities) / MB
    out = {"n_spots": int(data.n_obs), "features": {m: len(data.var_names[m]) for m in data.modalities},
           "inputs_as_held_mb": round(input_bytes(data) / MB, 1), "inputs_dense_mb": round(dense_inputs_mb, 1),
           "output_mb": round(chunked.nbytes / MB, 1), "threads": args.threads,
           "chunked": new, "whole_matrix": old, "identical_output": same,
           "peak_ratio_whole_to_chunked": round(old["peak_above_start_mb"] / max(new["peak_above_start_mb"], 1.0), 1),
           "time_ratio_whole_to_chunked": round(old["seconds"] / max(new["seconds"], 1e-3), 2)}
    write_report(out, args.out, indent=2)
    return out


if __name__ == "__main__":
    main()
