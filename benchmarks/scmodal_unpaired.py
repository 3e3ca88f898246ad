"""scMODAL on a real development case treated as unpaired (issue 17, item 2): FOSCTTM and label transfer over the
training steps, beside Harmony on the PCA of the row-stacked linked features. Prints a table and writes JSON.

    python benchmarks/scmodal_unpaired.py --case starmap --steps 3000 --every 250 \
        --out benchmarks/results/scmodal_unpaired_starmap.json [--params '{"sphere": false}'] [--train '{...}']

The case's two modalities (STARmap: two disjoint halves of the genes of the same cells) are two datasets whose
spots the training never pairs (the engine samples each dataset on its own). The links between them are the
``--link-top`` most correlated feature pairs (Spearman) on the cells of ONE section (``--link-section``, default the
first), the stand-in for prior knowledge a user would have. Scores are on the cells of the other sections, whose
true pairing is known: FOSCTTM (0 perfect, 0.5 random) and 15-NN label transfer of the cell types in both
directions. Every ``--every`` steps the current latents are scored, so the curve shows whether more training
helps or hurts; wall time per step is the engine's, on the threads given.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


class Case:
    """The unpaired set-up of a development case, shared with ``scmodal_reference.py``: the two modalities, the
    correlation links of one section, the scored cells (the other sections, both modalities measured) and their
    scores (FOSCTTM, the anchor ratio, 15-NN label transfer both ways)."""

    def __init__(self, name: str, *, link_section=None, link_top: int = 100, max_per_feature=None):
        import torch

        from spatialmix import datasets
        from spatialmix.data import as_multimodal
        from spatialmix.models._scmodal_module import mnn_pairs
        from spatialmix.models.scmodal import correlation_links

        case = datasets.CASES[name]
        o = case.options()
        lk = o.pop("label_key")
        self.mmd = mmd = as_multimodal(case.build(), label_key=lk, **o)
        self.a, self.b = a, b = mmd.modalities[:2]
        samples = mmd.obs["sample"].astype(str).to_numpy()
        self.ref = ref = link_section or sorted(set(samples))[0]
        self.links = correlation_links(mmd, a, b, samples=[ref], top=link_top, max_per_feature=max_per_feature)
        self.ev = ev = mmd.mask[a] & mmd.mask[b] & (samples != ref)
        self.lab = mmd.labels.astype(str).to_numpy()
        # an unsupervised criterion (needs no pairing, no labels): anchors = mutual nearest neighbours of the
        # linked features over every scored cell; the anchors' mean squared latent distance over that of random
        # pairs
        self.linked_a = _zs(mmd.dense(a)[:, mmd.var_names[a].get_indexer([x[0] for x in self.links])][ev])
        self.linked_b = _zs(mmd.dense(b)[:, mmd.var_names[b].get_indexer([x[1] for x in self.links])][ev])
        self.anchors = mnn_pairs(torch.tensor(self.linked_a, dtype=torch.float32),
                                 torch.tensor(self.linked_b, dtype=torch.float32), 30).numpy()
        self.rand = np.random.default_rng(0).integers(0, int(ev.sum()), (20000, 2))

    def scores(self, Za, Zb) -> dict:
        """Scores of the latents of every spot (rows of ``Za`` / ``Zb``) on the scored cells."""
        from spatialmix.evaluate.metrics import foscttm, label_transfer_accuracy

        a, b, ev, lab = self.a, self.b, self.ev, self.lab
        za, zb = Za[ev], Zb[ev]
        ratio = (((za[self.anchors[:, 0]] - zb[self.anchors[:, 1]]) ** 2).sum(1).mean()
                 / ((za[self.rand[:, 0]] - zb[self.rand[:, 1]]) ** 2).sum(1).mean())
        return {"foscttm": round(foscttm(za, zb), 4), "anchor_ratio": round(float(ratio), 4),
                f"label_transfer_{a}_to_{b}": round(label_transfer_accuracy(za, lab[ev], zb, lab[ev]), 4),
                f"label_transfer_{b}_to_{a}": round(label_transfer_accuracy(zb, lab[ev], za, lab[ev]), 4)}


def _zs(X):
    X = X - X.mean(axis=0)
    sd = X.std(axis=0)
    return X / np.where(sd > 0, sd, 1.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="starmap")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--every", type=int, default=250)
    p.add_argument("--link-section", default=None)
    p.add_argument("--link-top", type=int, default=100)
    p.add_argument("--params", default="{}", help="JSON of SCMODAL parameters")
    p.add_argument("--train", default="{}", help="JSON of training options")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--selection-start", type=int, default=None,
                   help="score the checkpoint selection from this step on (default: SCMODAL.selection_start_steps)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from spatialmix.models.baselines import harmony, pca
    from spatialmix.models.scmodal import SCMODAL

    case = Case(args.case, link_section=args.link_section, link_top=args.link_top)
    mmd, a, b, links, ev, ref, scores = case.mmd, case.a, case.b, case.links, case.ev, case.ref, case.scores
    la0, lb0 = case.linked_a, case.linked_b

    # the baseline: Harmony on PCA of the row-stacked, standardised linked features (modality = Harmony's batch)
    st = np.vstack([la0, lb0])
    Z = pca(st, n_components=min(50, st.shape[1] - 1), seed=args.seed)
    Zh = harmony(Z, np.array([a] * len(la0) + [b] * len(lb0)), seed=args.seed)
    full = [np.full((len(ev), Zh.shape[1]), np.nan, np.float32) for _ in range(2)]
    full[0][ev], full[1][ev] = Zh[: len(la0)], Zh[len(la0):]
    base = scores(*full)
    print(f"{args.case}: {a} vs {b}, {len(links)} links from section {ref}, {int(ev.sum())} cells scored")
    print("Harmony on linked-feature PCA:", base, flush=True)

    params = json.loads(args.params)
    train = {"max_steps": args.steps, "seed": args.seed, "step_events": False, **json.loads(args.train)}
    if args.selection_start is not None:
        SCMODAL.selection_start_steps = args.selection_start
    model = SCMODAL(mmd, modalities=[a, b], links={f"{a}|{b}": links}, seed=args.seed, **params)
    curve, t0, next_at = [], time.perf_counter(), args.every
    train_s = 0.0
    for ev_ in model.iter_train(**train):
        info = ev_.info or {}
        if info.get("event") != "epoch":
            continue
        step = (info["epoch"]) * info["steps_per_epoch"]
        if step >= next_at or step >= args.steps:
            train_s += time.perf_counter() - t0
            was, model.is_trained = model.is_trained, True  # score the weights of this epoch, mid-training
            s = scores(model.get_latent_representation(a), model.get_latent_representation(b))
            model.is_trained = was
            model.module.train()
            curve.append({"step": min(step, args.steps), "train_s": round(train_s, 1), **s})
            print(curve[-1], flush=True)
            next_at = step + args.every
            t0 = time.perf_counter()
    final = scores(model.get_latent_representation(a), model.get_latent_representation(b))
    out = {"case": args.case, "modalities": [a, b], "link_section": ref, "n_links": len(links),
           "scored_cells": int(ev.sum()), "params": params, "train": train, "threads": args.threads,
           "selection_start_steps": SCMODAL.selection_start_steps,
           "seconds_per_step": round(train_s / max(curve[-1]["step"], 1), 4) if curve else None,
           "final": final, "curve": curve, "harmony_linked_pca": base,
           "schedule": model.train_config.get("schedule"),
           "selection_scores": [{"epoch": h["epoch"], "step": h["epoch"] * (model.schedule_ or {}).get("steps_per_epoch", 1),
                                 "selection": h["selection"]} for h in model.history if "selection" in h]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print("schedule", out["schedule"])
    print("final", final, "| s/step", out["seconds_per_step"], "| written", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
