"""How much annotation signal survives a low-dimensional view of the *raw* inputs? (issue 14, item 6)

    python benchmarks/raw_representations.py CASE OUT.jsonl

No model is trained. Each representation of the measured inputs is scored by the benchmark's own
leave-one-sample-out ensemble (spatialmix.evaluate.annotations.iter_cross_validate with the options `spatialmix
benchmark` uses, on the spots every modality measured): each raw modality as it is, the PCA with 10 / 20 / 50 /
100 components of each modality's z-scored features, and every modality z-scored side by side (with and without
the PCA-50 of them all). It answers whether an embedding of a few dozen dimensions (MIMA's PoE, its corrected PCA)
can be expected to match a random forest on all of one modality's raw features (docs/models.md, "Why seed 11
fails"). Printed and appended to OUT.jsonl. Spatial cases are prepared once into /tmp/exp/<case>.zarr, the same
cache as benchmarks/mima_variants.py.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from spatialmix.evaluate.annotations import EnsembleOptions, iter_cross_validate
from spatialmix.models.baselines import common_spots
from spatialmix.progress import run

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import case_data  # noqa: E402

case, outf = sys.argv[1], sys.argv[2]
mmd = case_data(case)

ev = common_spots(mmd)
labels = pd.Series(mmd.labels.astype(str).to_numpy())
samples = mmd.obs["sample"].astype(str).to_numpy()


def zscored(m):
    R = mmd.dense(m).astype(np.float32)
    sd = R[ev].std(axis=0)
    return (R - R[ev].mean(axis=0)) / np.where(sd > 0, sd, 1.0)


def pca(Z, k):
    k = min(k, Z.shape[1], int(ev.sum()) - 1)
    return PCA(k, random_state=0).fit(Z[ev]).transform(Z)


reps = {}
for m in mmd.modalities:
    reps[f"raw_{m}"] = mmd.dense(m).astype(np.float32)
    Z = zscored(m)
    for k in (10, 20, 50, 100):
        if k < Z.shape[1]:
            reps[f"pca{k}_{m}"] = pca(Z, k)
allz = np.hstack([zscored(m) for m in mmd.modalities])
reps["raw_cat"] = allz
reps["raw_cat+pca50"] = np.hstack([allz, pca(allz, 50)])

results = {}
for name, X in reps.items():
    t = time.perf_counter()
    results[name] = run(iter_cross_validate(np.asarray(X, np.float32), labels, samples, scheme="loocv", mask=ev,
                                            options=EnsembleOptions(seed=0)))
    print(f"{name}: scored in {time.perf_counter() - t:.0f} s", flush=True)
best_raw = pd.concat({k: results[f"raw_{m}"].per_class["f1"] for m in mmd.modalities for k in [m]}, axis=1).max(axis=1)
n_spots = results[f"raw_{mmd.modalities[0]}"].per_class["n_spots"].reindex(best_raw.index)
with open(outf, "a") as fh:
    for name, r in results.items():
        f1 = r.per_class["f1"].reindex(best_raw.index)
        lost = (best_raw - f1)[n_spots >= 10]
        rec = {"case": case, "representation": name, "n_features": int(reps[name].shape[1]),
               "loocv_f1": round(float(r.summary["f1"]), 4),
               "per_class_f1": {str(k): round(float(v), 3) for k, v in f1.items()},
               "classes_losing_over_0.05": {str(k): round(float(v), 3) for k, v in lost[lost > 0.05].items()}}
        print(json.dumps(rec), flush=True)
        fh.write(json.dumps(rec) + "\n")
