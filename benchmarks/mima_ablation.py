"""Ablation of the MIMA choices the paper leaves open, on a prepared simulated project (truth regions known).

Each variant is trained with the demo's training options and scored with the same metrics as the demo
(scib-metrics batch mixing / bio conservation against the simulator's true regions, translation on the
held-out spots against the class-mean baseline). Prints a table and writes JSON.

    python benchmarks/mima_ablation.py --project demo_out/project.zarr --data sample_data \
        --out benchmarks/results/mima_ablation.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "default (beta_batch 0, adversarial 0.1)": {},
    "paper loss only (beta_batch 0.01, adversarial 0)": {"beta_batch": 0.01, "adversarial": 0.0},
    "beta_batch 0, no adversarial": {"adversarial": 0.0},
    "adversarial 1.0": {"adversarial": 1.0},
    "adversarial 0.1 on private latents only": {"adversarial_on": "private"},
    "adversarial 0.3 on private latents only": {"adversarial_on": "private", "adversarial": 0.3},
    "no translation loss": {"translation_loss": False},
    "sample one-hot also into shared/private heads": {"encode_covariate": True},
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="the simulated dataset folder (for truth/)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "mima_ablation.json")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--variants", default=None, help="comma-separated subset of variant numbers (0-based)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from spatialmix.data import MultiModalData
    from spatialmix.integrate import DEMO_TRAIN, evaluate_integration
    from spatialmix.models import MIMA
    from spatialmix.project import load_project
    from spatialmix.simulate import load_truth

    sdata = load_project(args.project)
    data = MultiModalData.from_spatialdata(sdata, annotation_key="pathologist")
    truth = load_truth(args.data, data.obs)["region"]
    train = dict(DEMO_TRAIN)
    if args.epochs:
        train["epochs"] = args.epochs
    names = list(VARIANTS)
    if args.variants:
        names = [names[int(i)] for i in args.variants.split(",")]
    results = {}
    for name in names:
        t = time.perf_counter()
        model = MIMA(data, **VARIANTS[name]).train(**train)
        m = evaluate_integration(data, model, reference_labels=truth, annotation_key="pathologist")
        m["train_seconds"] = round(time.perf_counter() - t, 1)
        m["params"] = VARIANTS[name]
        results[name] = m
        sc = m["integration"]
        tr = m["translation_heldout"]
        print(f"{name}: PoE batch {sc['mima_poe']['batch_score']:.3f} bio {sc['mima_poe']['bio_score']:.3f} | "
              f"corrected MSI batch {sc['mima_corrected_msi']['batch_score']:.3f} bio "
              f"{sc['mima_corrected_msi']['bio_score']:.3f} | raw MSI batch {sc['raw_msi']['batch_score']:.3f} bio "
              f"{sc['raw_msi']['bio_score']:.3f} | " + " ".join(
                  f"{k} r {v['pearson_median']:.2f} (base {v['baseline_pearson_median']:.2f})" for k, v in tr.items()),
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from spatialmix.project import jsonable

    payload = {"project": str(args.project), "train": train, "threads": args.threads, "variants": jsonable(results)}
    args.out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
