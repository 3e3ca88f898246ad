"""Combine the corrected PCA with measured modalities at the level of predictions, and choose the combination
inside the training samples (issue 14, item 6; docs/models.md "Annotation representation").

    python benchmarks/annotation_combinations.py CASE OUT.jsonl [vote|concat]

Uses the outputs `benchmarks/annotation_representations.py CASE ...` cached in `/tmp/exp/<case>_outputs.npz` (run
that first). One balanced-bagging ensemble (`spatialmix.evaluate.annotations.OneVsRestEnsemble`, the benchmark's
options) is trained per block (MIMA's corrected PCA and each modality's measured inputs, NaN filled with 0 so
that every evaluated spot is predicted), and a combination predicts the class with the highest mean probability
over its blocks ("vote:<blocks>"), or, with MODE "concat", one ensemble on the blocks side by side
("concat:<blocks>"). "nested" chooses, in every leave-one-sample-out fold, the combination with the
best mean F1 in an inner leave-one-sample-out over the training samples only (no label of the held-out sample is
looked at); "nested_with_singles" makes the same choice with each modality's measured inputs alone among the
candidates (the ensemble may then ignore MIMA's output). Mean F1 over (fold, class) and the classes that lose
> 0.05 F1 to the best raw single modality are printed and appended to OUT.jsonl.
"""

import json
import sys
import time

import numpy as np
import pandas as pd

from spatialmix.evaluate.annotations import (PAPER_EXCLUDED, EnsembleOptions, OneVsRestEnsemble, _scores,
                                             excluded_classes)

case, outf = sys.argv[1], sys.argv[2]
mode = sys.argv[3] if len(sys.argv) > 3 else "vote"  # "vote" or "concat"
z = dict(np.load(f"/tmp/exp/{case}_outputs.npz", allow_pickle=True))
mods = [str(x) for x in z["modalities"]]
y = z["labels"].astype(str)
samples = z["samples"].astype(str)
ev = z["evaluated"].astype(bool)
labelled = ~pd.Series(y).isin(["nan", "", "None"]).to_numpy()
present = sorted(set(y[labelled & ev]))
excluded = excluded_classes(present, PAPER_EXCLUDED)
classes = [c for c in present if c not in excluded]
usable = labelled & np.isin(y, classes) & ev
blocks = {"cpca": z["corrected_pca"], **{f"raw_{m}": z[f"raw_{m}"] for m in mods}}
blocks = {k: np.nan_to_num(v.astype(np.float32)) for k, v in blocks.items()}
options = EnsembleOptions(seed=0)
combos = [("cpca",)] + [("cpca", f"raw_{m}") for m in mods] + [tuple(blocks)]
singles = [(f"raw_{m}",) for m in mods]


def probabilities(train, test, keys=None):
    """Probabilities on ``test`` of ensembles trained on ``train``: {block: ...} for "vote" (one ensemble per
    block), {combination: ...} for "concat" (one ensemble per combination, its blocks side by side; a random
    forest does not depend on the features' scales, so the blocks are not rescaled)."""
    out = {}
    for key in (blocks if mode == "vote" else keys or combos + singles):
        X = blocks[key] if mode == "vote" else np.hstack([blocks[b] for b in key])
        e = OneVsRestEnsemble(options).fit(X[train], y[train], classes)
        P = np.zeros((len(test), len(classes)))
        P[:, [classes.index(c) for c in e.classes_]] = e.predict_proba(X[test])
        out[key] = P
    return out


def vote(P, combo):
    """The predicted class of a combination: its blocks' mean probability ("vote"), or its own ensemble's."""
    mean = np.mean([P[k] for k in combo], axis=0) if mode == "vote" else P[combo]
    return np.asarray(classes)[mean.argmax(axis=1)]


uniq = list(pd.unique(samples[ev]))
rows = {c: [] for c in combos + singles}
rows["nested"] = []
rows["nested_with_singles"] = []  # the same inner choice, with each measured modality alone among the candidates
chosen = []
t0 = time.time()
for s in uniq:
    test = np.flatnonzero(ev & (samples == s))
    train = np.flatnonzero(usable & (samples != s))
    P = probabilities(train, test)
    scored = usable[test]
    for c in rows:
        if not str(c).startswith("nested"):
            rows[c] += [{"fold": s, **r} for r in _scores(y[test][scored], vote(P, c)[scored], classes, 3)]
    inner = {c: [] for c in combos + singles}  # leave one training sample out, within the training samples only
    for s2 in [u for u in uniq if u != s]:
        itest = np.flatnonzero(usable & (samples == s2))
        itrain = np.flatnonzero(usable & (samples != s) & (samples != s2))
        Pi = probabilities(itrain, itest, combos + singles)
        for c in inner:
            inner[c] += [r["f1"] for r in _scores(y[itest], vote(Pi, c), classes, 3)]
    best = max(combos, key=lambda c: np.mean(inner[c]))
    best_all = max(inner, key=lambda c: np.mean(inner[c]))
    chosen.append({"fold": s, "chosen": "+".join(best), "chosen_with_singles": "+".join(best_all),
                   "inner_f1": {"+".join(c): round(float(np.mean(v)), 3) for c, v in inner.items()}})
    rows["nested"] += [{"fold": s, **r} for r in _scores(y[test][scored], vote(P, best)[scored], classes, 3)]
    rows["nested_with_singles"] += [{"fold": s, **r}
                                    for r in _scores(y[test][scored], vote(P, best_all)[scored], classes, 3)]
    print(json.dumps(chosen[-1]), f"{time.time() - t0:.0f} s", flush=True)


def summarise(r):
    df = pd.DataFrame(r)
    return df["f1"].mean(), df.groupby("class")["f1"].mean(), df.groupby("class")["n"].sum()


raw = {c[0]: summarise(rows[c]) for c in singles}
best_raw = pd.concat({k: v[1] for k, v in raw.items()}, axis=1).max(axis=1)
n_spots = next(iter(raw.values()))[2].reindex(best_raw.index)
with open(outf, "a") as fh:
    for c, r in rows.items():
        mean_f1, per_class, _ = summarise(r)
        lost = (best_raw - per_class.reindex(best_raw.index))[n_spots >= 10]
        name = c if isinstance(c, str) else f"{mode}:" + "+".join(c)
        rec = {"case": case, "mode": mode, "rep": name, "loocv_f1": round(mean_f1, 4),
               "losing": {k: round(float(v), 3) for k, v in lost[lost > 0.05].items()}}
        if str(c).startswith("nested"):
            rec["chosen"] = chosen
        print(json.dumps(rec))
        fh.write(json.dumps(rec) + "\n")
