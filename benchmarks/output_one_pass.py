"""Writing MIMA's results with one inference pass for every output, beside one pass per output (issue 16,
item 3): wall time and peak RSS of ``write_results`` for the same trained model and data, values compared.

The per-output path is the writer as it was (each of latent, private, corrected, denoised, translations and
expert weights encodes every chunk again); it is reproduced by hiding ``MIMA.get_outputs`` from the writer.
Data: the synthetic Visium HD-like project of ``visium_hd_scale.py`` (``rna`` CSR + dense ``morphology``, two
samples), default 20,000 bins x 5,000 genes; the model trains 2 optimiser steps (the values do not matter, the
shapes do). The RGB colouring (a UMAP, the same in both) is left out of the timing.

Run: ``PYTHONPATH=src python benchmarks/output_one_pass.py [--bins 20000] [--genes 5000] [--threads 1]
[--out benchmarks/results/output_one_pass.json]``
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
OUTPUTS = ["latent", "private", "corrected", "corrected_pca", "denoised", "translations", "expert_weights"]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bins", type=int, default=20_000)
    ap.add_argument("--genes", type=int, default=5_000)
    ap.add_argument("--density", type=float, default=0.02)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(HERE / "results" / "output_one_pass.json"))
    args = ap.parse_args(argv)

    import torch

    from spatialmix.data import MultiModalData
    from spatialmix.models import MIMA
    from spatialmix.results import write_results
    from train_speed import RSSSampler, measured_call, write_report
    from visium_hd_scale import synthetic_hd_project

    torch.set_num_threads(args.threads)
    sdata = synthetic_hd_project(args.bins, args.genes, args.density)
    data = MultiModalData.from_spatialdata(sdata, annotation_key=None)
    model = MIMA(data)
    model.train(max_steps=2, epochs=1, train_fraction=1.0)
    sampler = RSSSampler(interval=0.01)
    sampler.start()

    def timed(label):
        events = []
        _, fig = measured_call(lambda: write_results(sdata, model, outputs=OUTPUTS, progress=events.append), sampler)
        snapshot = {(name, slot, k): np.array(getattr(t, slot)[k]) for name, t in sdata.tables.items()
                    for slot in ("obsm", "layers") for k in getattr(t, slot) if k.startswith(("X_mima", "mima"))}
        row = {"seconds": fig["seconds"], "peak_above_start_mb": fig["peak_above_start_mb"],
               "progress_events": len(events)}
        print(f"{label:<28} {row['seconds']:7.2f} s   peak {row['peak_above_start_mb']:8.1f} MB above start",
              flush=True)
        return row, snapshot

    def hidden(self):
        raise AttributeError("get_outputs hidden: one pass per output")

    timed("warm-up (not reported)")
    one, vals_one = timed("one pass for every output")
    with mock.patch.object(MIMA, "get_outputs", property(hidden)):
        assert not hasattr(model, "get_outputs")
        per, vals_per = timed("one pass per output")
    sampler.stop()
    same = set(vals_one) == set(vals_per) and all(
        np.array_equal(vals_one[k], vals_per[k], equal_nan=True) for k in vals_one)
    out = {"benchmark": "output_one_pass", "n_spots": int(data.n_obs),
           "features": {m: len(data.var_names[m]) for m in data.modalities}, "outputs": OUTPUTS,
           "arrays_written": len(vals_one), "threads": args.threads, "one_pass": one, "per_output": per,
           "identical_values": bool(same), "time_ratio_per_output_to_one_pass": round(per["seconds"] / one["seconds"], 2)}
    write_report(out, args.out, indent=1)
    return out


if __name__ == "__main__":
    main()
