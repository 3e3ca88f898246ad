"""An experiment, not a model option: the calibration with ``label_shift=True`` but the targets' class composition
fixed before training to a Saerens et al. (2002) EM estimate from logistic regression on the standardised raw
concatenated source features (instead of the online EM on the model's own discriminator). Same split, logistic
regression and scoring as ``benchmarks/calibration_split.py`` (its ``Split``; sources P1_S1, P2_S1). Prints the
estimate, the truth and the target F1; appends a JSON line to OUT.

    python benchmarks/calibration_fixed_prior.py sim7 benchmarks/results/calibration_fixed_prior.jsonl

Results and what they mean: docs/models.md ("Label shift").
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main(case: str, outf: str) -> None:
    import torch

    from calibration_split import Split
    from spatialmix.models.calibration import Calibration

    torch.set_num_threads(1)
    split = Split(case, ["P1_S1", "P2_S1"])
    samples, sources, labels = split.samples, split.sources, split.labels
    clf = split.logistic_regression
    # Saerens EM (batch, to convergence) on the targets' logistic-regression probabilities; the model's
    # update_target_prior does one momentum step of the same rule per minibatch on D's probabilities instead
    target = ~np.isin(samples, sources) & split.keep
    P = clf.predict_proba(split.X[target])
    ps = np.array([(split.y_train == c).mean() for c in clf.classes_])
    pt = ps.copy()
    for _ in range(200):
        q = P * (pt / ps)
        q /= q.sum(1, keepdims=True)
        pt = q.mean(0)
    print("LR-EM target composition", dict(zip(clf.classes_, np.round(pt, 3))), flush=True)
    print("true", labels[target & split.evaluated].astype(str).value_counts().to_dict(), flush=True)

    m = Calibration(split.mmd, source_batches=split.source_batches, label_shift=True)
    est = dict(zip(clf.classes_, pt))
    set_source_prior = m.module.set_source_prior

    def set_prior(prior):  # the sources' composition as usual, then the target estimate fixed
        set_source_prior(prior)
        tp = torch.tensor([est.get(c, 0.0) for c in m.params["classes"]], dtype=torch.float32) + 1e-3
        m.module.target_prior.copy_(tp / tp.sum())

    m.module.set_source_prior = set_prior
    m.module.update_target_prior = lambda *a, **k: None
    t = time.perf_counter()
    m.train(step_events=False)
    train_s = time.perf_counter() - t
    pred = m.predict_labels()
    cal = split.score(pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float), "calibration")
    tg = ~np.isin(samples, sources) & split.evaluated
    out = {"case": case, "variant": "label_shift, target prior fixed from logistic-regression EM",
           "lr_em_estimate": dict(zip(map(str, clf.classes_), np.round(pt, 3).tolist())),
           "true_target_counts": labels[tg].astype(str).value_counts().to_dict(), "train_s": round(train_s, 1),
           "calibration_f1": cal.summary["f1"],
           "target_prior": dict(zip(m.params["classes"], np.round(m.module.target_prior.numpy(), 3).tolist())),
           "predicted_target_counts": pred["label"].astype(str)[tg].value_counts().to_dict()}
    print(json.dumps(out), flush=True)
    with open(outf, "a") as f:
        f.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
