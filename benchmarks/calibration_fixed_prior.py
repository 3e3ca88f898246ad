"""An experiment, not a model option: the calibration with ``label_shift=True`` but the targets' class composition
fixed before training to a Saerens et al. (2002) EM estimate from logistic regression on the standardised raw
concatenated source features (instead of the online EM on the model's own discriminator). Same split, logistic
regression and scoring as ``benchmarks/calibration_split.py`` (sources P1_S1, P2_S1; project prepared there into
/tmp/exp/<case>.zarr). Prints the estimate, the truth and the target F1; appends a JSON line to OUT.

    python benchmarks/calibration_fixed_prior.py sim7 benchmarks/results/calibration_fixed_prior.jsonl

Results and what they mean: docs/models.md ("Label shift").
"""
import json, sys, time
import numpy as np, torch
from pathlib import Path
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from spatialmix.data import MultiModalData
from spatialmix.evaluate import annotations as ann
from spatialmix.models.baselines import common_spots, concatenated
from spatialmix.models.calibration import Calibration
from spatialmix.project import load_project
torch.set_num_threads(1)
case, outf = sys.argv[1], sys.argv[2]
mmd = MultiModalData.from_spatialdata(load_project(Path(f"/tmp/exp/{case}.zarr")), annotation_key="pathologist")
samples = mmd.obs["sample"].astype(str).to_numpy(); sources = ["P1_S1", "P2_S1"]
labels = mmd.obs["pathologist"].astype(object); evaluated = common_spots(mmd)
Xc, keep = concatenated(mmd); full = np.zeros((mmd.n_obs, Xc.shape[1])); full[keep] = Xc
y = np.array([str(v) for v in labels.to_numpy()])
train = np.isin(samples, sources) & keep & ~np.isin(y, ["nan", "None", *ann.PAPER_EXCLUDED])
sc = StandardScaler().fit(full[train]); clf = LogisticRegression(max_iter=3000).fit(sc.transform(full[train]), y[train])
target = ~np.isin(samples, sources) & keep
P = clf.predict_proba(sc.transform(full[target]))
ps = np.array([(y[train] == c).mean() for c in clf.classes_]); pt = ps.copy()
for _ in range(200):
    q = P * (pt / ps); q /= q.sum(1, keepdims=True); pt = q.mean(0)
print("LR-EM target composition", dict(zip(clf.classes_, np.round(pt, 3))), flush=True)
print("true", labels[target & evaluated].astype(str).value_counts().to_dict(), flush=True)
batches_of = mmd.obs.groupby(mmd.obs["sample"].astype(str), observed=True)[mmd.batch_key].first()
m = Calibration(mmd, source_batches=[str(batches_of[s]) for s in sources], label_shift=True)
est = {c: p for c, p in zip(clf.classes_, pt)}
orig = m.module.set_source_prior
def set_prior(prior):
    orig(prior)
    tp = torch.tensor([est.get(c, 0.0) for c in m.params["classes"]], dtype=torch.float32) + 1e-3
    m.module.target_prior.copy_(tp / tp.sum())
m.module.set_source_prior = set_prior
m.module.update_target_prior = lambda *a, **k: None
t = time.perf_counter(); m.train(step_events=False); train_s = time.perf_counter() - t
pred = m.predict_labels()
cal = ann.score_predictions(pred["label"].astype(object).to_numpy(), pred["confidence"].to_numpy(float), labels,
                            samples, source_samples=sources, representation="calibration", mask=evaluated,
                            index=labels.index)
tg = ~np.isin(samples, sources) & evaluated
out = {"case": case, "variant": "label_shift, target prior fixed from logistic-regression EM",
       "lr_em_estimate": dict(zip(map(str, clf.classes_), np.round(pt, 3).tolist())),
       "true_target_counts": labels[tg].astype(str).value_counts().to_dict(), "train_s": round(train_s, 1),
       "calibration_f1": cal.summary["f1"],
       "target_prior": dict(zip(m.params["classes"], np.round(m.module.target_prior.numpy(), 3).tolist())),
       "predicted_target_counts": pred["label"].astype(str)[tg].value_counts().to_dict()}
print(json.dumps(out), flush=True)
open(outf, "a").write(json.dumps(out) + "\n")
