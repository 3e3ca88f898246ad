"""Sweep MIMA variants on a development case (how the defaults of issue 14 were chosen; docs/models.md).

    python benchmarks/mima_variants.py CASE 'VARIANTS_JSON' OUT.jsonl

CASE is a key of spatialmix.datasets.CASES (starmap, visium_he, sim0, sim7, sim11); VARIANTS_JSON maps a name to
{"params": {...MIMA parameters}, "train": {...training options}, "reps": ["poe", "shared_cat", ...]}. Each variant
is trained once; printed and appended to OUT.jsonl: training seconds, epochs run, a quick leave-one-batch-out
logistic-regression macro F1 (a proxy, not the benchmark's LOOCV ensemble) and the scIB scores of the
benchmark's own function (spatialmix.evaluate.metrics.scib_benchmark, with PCA-50 of the inputs as the
unintegrated reference, so totals sit ~0.01 above `spatialmix benchmark`'s, which uses pca_concat).
Spatial cases are prepared once into /tmp/exp/<case>.zarr.
"""
import json, sys, time
import numpy as np, pandas as pd
import torch
from spatialmix import datasets
from spatialmix.data import as_multimodal
from spatialmix.models import MIMA
from spatialmix.evaluate.metrics import scib_benchmark
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import f1_score

case = sys.argv[1]; variants = json.loads(sys.argv[2]); outf = sys.argv[3]
c = datasets.CASES[case]; path = c.build(); o = c.options(); lk = o.pop("label_key", None)
if o:
    mmd = as_multimodal(path, label_key=lk, **o)
else:  # spatial dataset folder: prepared once, cached
    from pathlib import Path
    from spatialmix.data import MultiModalData
    from spatialmix.project import load_project, save_project
    from spatialmix.pipeline import iter_prepare
    from spatialmix.progress import run
    zp = Path(f"/tmp/exp/{case}.zarr"); zp.parent.mkdir(parents=True, exist_ok=True)
    if zp.exists():
        sdata = load_project(zp)
    else:
        sdata = run(iter_prepare(path, annotation_key="pathologist")); save_project(sdata, zp)
    mmd = MultiModalData.from_spatialdata(sdata, annotation_key="pathologist", batch_key="batch")
    lk = "pathologist"
labels = mmd.labels.astype(str).to_numpy(); batches = mmd.obs[mmd.batch_key].astype(str).to_numpy()
from spatialmix.evaluate.annotations import PAPER_EXCLUDED
from spatialmix.models.baselines import common_spots
valid = ~pd.Series(labels).isin(["nan", "None", "", *PAPER_EXCLUDED]).to_numpy()
ev = np.zeros(len(labels), bool); ev[common_spots(mmd)] = True
valid &= ev
def lobo(Z):
    f = []
    for b in np.unique(batches):
        tr, te = (batches != b) & valid, (batches == b) & valid
        s = StandardScaler().fit(Z[tr]); clf = LogisticRegression(max_iter=2000, C=1.0).fit(s.transform(Z[tr]), labels[tr])
        f.append(f1_score(labels[te], clf.predict(s.transform(Z[te])), average="macro"))
    return float(np.mean(f))
embs = {}; rec = {}
from sklearn.decomposition import PCA
X = np.hstack([mmd.dense(m) for m in mmd.modalities]); embs["pca"] = PCA(50, random_state=0).fit_transform(X)
rec["pca"] = {"lobo_f1": lobo(embs["pca"])}
for name, v in variants.items():
    t = time.perf_counter()
    params = v.get("params", {}); tr = v.get("train", {})
    m = MIMA(mmd, **params); m.train(**tr)
    hist = [h for h in m.history if "loss" in h]
    Z = m.get_latent_representation()
    reps = v.get("reps", ["poe"])
    allz = {"poe": Z}
    for mm in m.modalities:
        allz[f"shared_{mm}"] = m.get_latent_representation("shared", mm)
        allz[f"private_{mm}"] = m.get_latent_representation("private", mm)
    for rep in reps:
        parts = {"poe": ["poe"], "poe+private": ["poe"] + [f"private_{mm}" for mm in m.modalities],
                 "shared_cat": [f"shared_{mm}" for mm in m.modalities],
                 "poe+shared": ["poe"] + [f"shared_{mm}" for mm in m.modalities]}[rep]
        Zr = np.hstack([allz[k] for k in parts])
        key = name if rep == "poe" else f"{name}:{rep}"
        embs[key] = Zr
        rec[key] = {"train_s": round(time.perf_counter() - t, 1), "lobo_f1": lobo(Zr), "epochs_run": len(hist), **v}
        print(key, rec[key], flush=True)
if lk:
    lab2 = np.where(valid, labels, None).astype(object)
    tab = scib_benchmark({k: v[ev] for k, v in embs.items()}, batches[ev], lab2[ev], pre_integrated="pca")
    for n in embs:
        rec[n].update({k: round(float(tab.loc[n, k]), 4) for k in ("Bio conservation", "Batch correction", "Total")})
with open(outf, "a") as fh:
    for n, r in rec.items(): fh.write(json.dumps({"case": case, "name": n, **r}) + "\n")
for n, r in rec.items(): print(n, {k: r.get(k) for k in ("train_s", "lobo_f1", "Bio conservation", "Batch correction", "Total")})
