"""scMODAL's unpaired benchmark section with other correlation-link options, on a project saved by
`spatialmix benchmark` (its ``project.zarr``): the same setup, steps, seed and scoring as the benchmark's
"unpaired alignment" section (RNA of the source samples against MSI of the targets, links from the first source
sample, scored on the truly paired spots of the other samples against Harmony on the PCA of the linked
features). Prints a table and writes JSON.

    python benchmarks/scmodal_links.py --benchmark /tmp/spatialmix-benchmarks/aligners_seed7 \
        --max-per-feature 1 --steps 2000 --out benchmarks/results/scmodal_links_seed7.json
    python benchmarks/scmodal_links.py --project /tmp/exp/sim7.zarr \
        --out benchmarks/results/scmodal_seed7_default_form.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--benchmark", type=Path,
                     help="an output folder of `spatialmix benchmark --models scmodal` (project.zarr, metrics.json)")
    src.add_argument("--project", type=Path, help="a prepared project (zarr) instead of a benchmark folder; then "
                     "--sources and --annotation-key say what the benchmark's metrics.json would")
    p.add_argument("--sources", default="P1_S1,P2_S1", help="with --project: the RNA samples (the first gives links)")
    p.add_argument("--annotation-key", default="pathologist", help="with --project: the label column")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--max-per-feature", type=int, default=None, help="links per feature at most (1: one-to-one)")
    p.add_argument("--steps", type=int, default=None,
                   help="optimiser steps (default: scMODAL's own schedule, with its selection criterion)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--params", default="{}", help="JSON of SCMODAL parameters (default: its defaults)")
    p.add_argument("--selection-start", type=int, default=None,
                   help="score the checkpoint selection from this step on (default: SCMODAL.selection_start_steps)")
    args = p.parse_args(argv)

    import torch

    from spatialmix.benchmark.sections import _unpaired_alignment
    from spatialmix.data import MultiModalData
    from spatialmix.project import jsonable, load_project

    torch.set_num_threads(args.threads)
    if args.benchmark is not None:
        metrics = json.loads((args.benchmark / "metrics.json").read_text())
        key, sources = metrics["annotation_key"], metrics["source_samples"]
        project = args.benchmark / "project.zarr"
    else:
        metrics, key, sources, project = {}, args.annotation_key, args.sources.split(","), args.project
    mmd = MultiModalData.from_spatialdata(load_project(project), annotation_key=key)
    samples = mmd.obs["sample"].astype(str).to_numpy()
    opts = {} if args.max_per_feature is None else {"max_per_feature": args.max_per_feature}
    train = {} if args.steps is None else {"max_steps": args.steps}
    if args.selection_start is not None:
        from spatialmix.models.scmodal import SCMODAL

        SCMODAL.selection_start_steps = args.selection_start
    out, _ = _unpaired_alignment(mmd, mmd.obs[key], samples, sources, seed=0, train=train,
                                 params=json.loads(args.params), link_options=opts)
    before = metrics.get("unpaired_alignment", {})
    print(f"links {opts or 'unlimited'}: {out['setup']['distinct_linked_features']} distinct (rna, msi) features")
    print("| method | links | FOSCTTM | label transfer rna->msi | msi->rna |\n|---|---|---|---|---|")
    for name, label in (("scmodal", "scMODAL"), ("harmony_linked_pca", "Harmony on linked-feature PCA")):
        for tag, res in (("benchmark's", before.get(name)), (str(opts or "unlimited"), out[name])):
            if res:
                print(f"| {label} | {tag} | {res['foscttm']:.3f} | {res['label_transfer_rna_to_msi']:.3f} | "
                      f"{res['label_transfer_msi_to_rna']:.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable({"benchmark": str(args.benchmark or project), "steps": args.steps,
                                             "params": json.loads(args.params),
                                             "selection_start_steps": args.selection_start, **out}),
                                   indent=2))
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
