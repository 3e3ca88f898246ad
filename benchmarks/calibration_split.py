"""The calibration on a simulated dataset's source / target split (the setup of `spatialmix benchmark`'s
domain-adaptation section), beside logistic regression on the raw concatenated source features, scored by the
benchmark's own ``score_predictions`` (mean per-class F1 over the target samples). Writes JSON.

    python benchmarks/calibration_split.py --case sim0 --params '{"label_shift": true}' \
        --out benchmarks/results/calibration_split_sim0.json

``--case`` is a spatial case of ``spatialmix.datasets.CASES`` (sim0 = the bundled sample, sim7, sim11), prepared
once into /tmp/exp/<case>.zarr; sources are P1_S1 and P2_S1 (``--sources``), the others targets.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


class Split:
    """A prepared case (``/tmp/exp/<case>.zarr``, prepared on first use) split into ``sources`` and targets, with
    logistic regression on the standardised concatenated raw features of the labelled source spots."""

    def __init__(self, case: str, sources: list[str]):
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        from spatialmix import datasets
        from spatialmix.data import MultiModalData
        from spatialmix.evaluate import annotations as ann
        from spatialmix.models.baselines import common_spots, concatenated
        from spatialmix.pipeline import iter_prepare
        from spatialmix.progress import run
        from spatialmix.project import load_project, save_project

        zp = Path(f"/tmp/exp/{case}.zarr")
        if not zp.exists():
            zp.parent.mkdir(parents=True, exist_ok=True)
            save_project(run(iter_prepare(datasets.CASES[case].build(), annotation_key="pathologist")), zp)
        self.mmd = mmd = MultiModalData.from_spatialdata(load_project(zp), annotation_key="pathologist")
        self.samples = mmd.obs["sample"].astype(str).to_numpy()
        self.sources = list(sources)
        self.labels = mmd.obs["pathologist"].astype(object)
        self.evaluated = common_spots(mmd)
        Xc, self.keep = concatenated(mmd)
        full = np.zeros((mmd.n_obs, Xc.shape[1]))
        full[self.keep] = Xc
        y = np.array([str(v) for v in self.labels.to_numpy()])
        self.train = (np.isin(self.samples, self.sources) & self.keep
                      & ~np.isin(y, ["nan", "None", *ann.PAPER_EXCLUDED]))
        self.y_train = y[self.train]
        sc = StandardScaler().fit(full[self.train])
        self.X = sc.transform(full)  # standardised raw features of every spot (rows without every modality: 0)
        self.logistic_regression = LogisticRegression(max_iter=3000).fit(self.X[self.train], self.y_train)
        batches_of = mmd.obs.groupby(mmd.obs["sample"].astype(str), observed=True)[mmd.batch_key].first()
        self.source_batches = [str(batches_of[s]) for s in self.sources]

    def score(self, pred, conf, name):
        """The benchmark's ``score_predictions``: mean per-class F1 over the scored target spots."""
        from spatialmix.evaluate import annotations as ann

        return ann.score_predictions(pred, conf, self.labels, self.samples, source_samples=self.sources,
                                     representation=name, mask=self.evaluated, index=self.labels.index)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", default="sim0")
    p.add_argument("--params", default="{}")
    p.add_argument("--sources", default="P1_S1,P2_S1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    import torch

    from spatialmix.models.calibration import Calibration
    from spatialmix.project import jsonable

    torch.set_num_threads(args.threads)
    split = Split(args.case, args.sources.split(","))
    mmd, samples, sources, labels, evaluated = split.mmd, split.samples, split.sources, split.labels, split.evaluated

    keep, clf = split.keep, split.logistic_regression
    P = clf.predict_proba(split.X[keep])
    pred_lr, conf_lr = np.full(mmd.n_obs, None, object), np.full(mmd.n_obs, np.nan)
    pred_lr[keep], conf_lr[keep] = clf.classes_[P.argmax(1)], P.max(1)
    lr = split.score(pred_lr, conf_lr, "logistic_regression")

    params = json.loads(args.params)
    t = time.perf_counter()
    m = Calibration(mmd, source_batches=split.source_batches, **params)
    m.train(step_events=False)
    train_s = time.perf_counter() - t
    pred = m.predict_labels()
    cal = split.score(pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float), "calibration")
    target = ~np.isin(samples, sources) & evaluated
    classes = m.params["classes"]
    prior = getattr(m.module, "target_prior", None)
    out = {"case": args.case, "sources": sources, "params": params, "train_s": round(train_s, 1),
           "calibration_f1": cal.summary["f1"], "logistic_regression_f1": lr.summary["f1"],
           "calibration": cal.summary, "logistic_regression": lr.summary,
           "calibration_per_class": json.loads(cal.per_class.to_json(orient="index")),
           "predicted_target_counts": pred["label"].astype(str)[target].value_counts().to_dict(),
           "true_target_counts": labels[target].astype(str).value_counts().to_dict(),
           "estimated_target_composition": None if prior is None else dict(zip(classes, np.round(prior.cpu().numpy(), 3).tolist())),
           "source_composition": None if prior is None else dict(zip(classes, np.round(m.module.source_prior.cpu().numpy(), 3).tolist()))}
    print(json.dumps(jsonable({k: out[k] for k in ("case", "params", "train_s", "calibration_f1", "logistic_regression_f1",
                                                   "predicted_target_counts", "estimated_target_composition")}), indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(jsonable(out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
