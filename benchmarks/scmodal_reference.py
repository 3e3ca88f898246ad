"""Our scMODAL beside the authors' public code (github.com/gefeiwang/scMODAL, ``scmodal.model.Model.train``) on
the same real data, the same links, the same number of steps, in one run on the same threads: seconds per step
(issue 17: ours at most 1/5 of the reference's time per step) and the alignment each reaches (FOSCTTM, 15-NN
label transfer). Prints a table and writes JSON.

    python benchmarks/scmodal_reference.py --reference /path/to/scMODAL-checkout [--extra-path DIR] \
        --case starmap --steps 1000 --out benchmarks/results/scmodal_reference_starmap.json

The authors' code is not part of this project and is not installed by it: point ``--reference`` at a checkout
of their repository (the folder holding the ``scmodal`` package). It imports ``annoy`` (PyPI: ``annoy``), which
``--extra-path`` can add from a folder outside the venv, e.g. ``pip install --target DIR annoy``.

The set-up is ``scmodal_unpaired.py``'s (``Case``): STARmap's two halves of the genes of the same cells as two
datasets never paired in training, links from the correlations on one section, scores on the other sections.
The links are one-to-one (``max_per_feature=1``) because the authors' ``train`` takes the linked features as the
first ``shared_gene_num`` columns of each dataset: each dataset gets its standardised features with the linked
ones first, in link order, and the same matrices (same column order) go to ours. The authors' hyper-parameters
are their defaults (batch 500, 5 discriminator updates per step, lambdas 10 / 10 / 1 / 10 / 1, k 30); ours are
ours (``docs/models.md``), without early stopping so both run exactly ``--steps`` steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scmodal_unpaired import Case, _zs  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference", type=Path, required=True, help="folder holding the authors' scmodal package")
    p.add_argument("--extra-path", type=Path, default=None, help="folder added to sys.path (e.g. annoy)")
    p.add_argument("--case", default="starmap")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--link-top", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["both", "ours", "reference"], default="both")
    p.add_argument("--params", default="{}", help="JSON of our SCMODAL's parameters (default: its defaults)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    from spatialmix.models.scmodal import SCMODAL

    params = json.loads(args.params)

    case = Case(args.case, link_top=args.link_top, max_per_feature=1)
    mmd, a, b, links = case.mmd, case.a, case.b, case.links
    k = len(links)
    # one matrix per dataset, the linked features first in link order: the authors' input convention
    mats, order = {}, {}
    for m, j in ((a, 0), (b, 1)):
        names = list(mmd.var_names[m])
        first = [x[j] for x in links]
        linked = set(first)
        order[m] = first + [n for n in names if n not in linked]
        X = mmd.dense(m)[:, mmd.var_names[m].get_indexer(order[m])][mmd.mask[m]]
        mats[m] = _zs(np.asarray(X, dtype=np.float64)).astype(np.float32)
    print(f"{args.case}: {a} ({mats[a].shape}) vs {b} ({mats[b].shape}), {k} one-to-one links from "
          f"section {case.ref}, {int(case.ev.sum())} cells scored, {args.steps} steps, {args.threads} thread(s)",
          flush=True)

    def full(m, Z):
        out = np.full((mmd.n_obs, Z.shape[1]), np.nan, np.float32)
        out[mmd.mask[m]] = Z
        return out

    rows = {}
    if args.only in ("both", "ours"):
        # ours on exactly these matrices: the case's project with them as its two inputs, the same links
        import dataclasses

        import pandas as pd

        X = {}
        for m in (a, b):
            X[m] = np.zeros((mmd.n_obs, mats[m].shape[1]), np.float32)  # 0 where not measured: the convention
            X[m][mmd.mask[m]] = mats[m]
        data = dataclasses.replace(mmd, modalities=[a, b], X=X, mask={m: mmd.mask[m] for m in (a, b)},
                                   var_names={m: pd.Index(order[m]) for m in (a, b)},
                                   preprocessing={m: "zscore" for m in (a, b)}, raw={})
        model = SCMODAL(data, modalities=[a, b], links={f"{a}|{b}": links}, seed=args.seed, **params)
        t0 = time.perf_counter()
        steps = 0
        for e in model.iter_train(max_steps=args.steps, seed=args.seed, step_events=False, early_stopping=False):
            info = e.info or {}
            if info.get("event") == "epoch":
                steps = (info["epoch"]) * info["steps_per_epoch"]
        wall = time.perf_counter() - t0
        steps = min(steps, args.steps) or args.steps
        s = case.scores(model.get_latent_representation(a), model.get_latent_representation(b))
        rows["spatialmix"] = {"params": params, "steps": steps, "train_s": round(wall, 2),
                              "s_per_step": round(wall / steps, 4), **s}
        print("spatialmix", rows["spatialmix"], flush=True)

    if args.only in ("both", "reference"):
        for path in (args.extra_path, args.reference):
            if path is not None:
                sys.path.insert(0, str(path))
        from scmodal.model import Model  # the authors' code, from --reference

        with tempfile.TemporaryDirectory() as tmp:
            ref = Model(batch_size=500, training_steps=args.steps, seed=1234 + args.seed, model_path=tmp,
                        data_path=tmp, result_path=tmp)
            ref.preprocess(ad.AnnData(mats[a]), ad.AnnData(mats[b]), shared_gene_num=k)
            ref.train()  # times itself: ref.train_time, the loop only (not the checkpoint)
            ref.eval()
        na = int(mmd.mask[a].sum())
        s = case.scores(full(a, ref.latent[:na]), full(b, ref.latent[na:]))
        rows["reference"] = {"steps": args.steps, "train_s": round(ref.train_time, 2),
                             "s_per_step": round(ref.train_time / args.steps, 4), **s}
        print("reference", rows["reference"], flush=True)

    ratio = None
    if len(rows) == 2:
        ratio = round(rows["spatialmix"]["s_per_step"] / rows["reference"]["s_per_step"], 3)
        print(f"time per step, ours / the authors': {ratio} (issue 17's goal: <= 0.2)")
    out = {"case": args.case, "modalities": [a, b], "link_section": case.ref, "n_links": k,
           "scored_cells": int(case.ev.sum()), "steps": args.steps, "threads": args.threads,
           "torch": torch.__version__, "rows": rows, "s_per_step_ratio_ours_over_reference": ratio}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print("written", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
