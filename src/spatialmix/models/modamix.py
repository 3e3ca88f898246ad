"""MoDAmix: supervised domain adaptation for multi-omics (Choi & Chae, Sci Rep 2026), the user-facing model.

Labelled *source* samples teach a subtype classifier; unlabelled *target* samples are aligned to them per omics
layer and in a joint multi-omics space by adversarial training, then pseudo-labelled.

>>> data = MultiModalData.from_spatialdata(sdata, annotation_key="pathologist")
>>> model = MoDAmix(data, source_samples=["P1_S1", "P1_S2"])   # every other sample is a target
>>> model.train()                                   # four stages, stage_epochs=(30, 30, 30, 30)
>>> z = model.get_latent_representation()          # joint embedding (n_spots, 64)
>>> h = model.get_latent_representation("omics", modality="msi")   # per-omics features
>>> pred = model.predict_labels()                  # DataFrame: label (categorical), confidence

The networks and losses live in :mod:`spatialmix.models._modamix_module`; ``docs/models.md`` documents every
default (which are ours where the paper gives none) and the deviations from the reference code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator, Field

from spatialmix.errors import ModelError, ParameterError
from spatialmix.params import Params, param

from ._base import BaseModel
from ._modamix_module import MoDAmixModule, n_parameters

def _stages(v: list[int]) -> list[int]:
    if len(v) != 4 or v[0] < 1 or min(v) < 0:
        raise ValueError("must be 4 whole numbers (epochs of pre-training, per-omics adversarial, joint "
                         "adversarial, pseudo-label stages), the first >= 1 and the others >= 0, e.g. [30, 30, 30, 30]")
    return v


class MoDAmixParams(Params):
    """MoDAmix's parameters, declared once (``spatialmix.params``)."""

    source_samples: Any = param(None, "the labelled source samples (one of `source_samples` / `target_samples` is "
                                "required, the other is the rest)", kind="list of sample names")
    target_samples: Any = param(None, "the target samples (their labels are never used for training)",
                                kind="list of sample names")
    exclude: Any = param(None, "classes without classification loss", kind="list of classes",
                         default_text="the MIMA paper's")
    stage_epochs: Annotated[list[int], AfterValidator(_stages)] = param(
        [30, 30, 30, 30], "epochs of the four stages (`[train] epochs` defaults to their sum)",
        kind="4 whole numbers, the first >= 1")
    adversarial: Literal["both", "omics", "none"] = param(
        "both", "adversarial levels (the paper's ablations: both = per-omics + joint)")
    hidden: list[Annotated[int, Field(ge=1)]] = param([256], "hidden layers of the per-omics extractors")
    n_omics: int = param(64, "output size of each per-omics extractor", ge=1)
    joint_hidden: list[Annotated[int, Field(ge=1)]] = param([128], "hidden layers of the fusion")
    n_latent: int = param(64, "size of the joint embedding", ge=1)
    disc_hidden: int = param(64, "hidden size of every domain discriminator", ge=1)
    dropout: float = param(0.2, "dropout after hidden layers of extractors and fusion", ge=0, lt=1)
    adv_weight: float = param(0.1, "weight of every domain-confusion term", ge=0)
    pseudo_weight: float = param(1.0, "weight of the target pseudo-label cross-entropy (stage 4)", ge=0)
    center_weight: float = param(1.0, "weight of the centre loss (stage 4)", ge=0)
    threshold: float = param(0.9, "softmax confidence above which target spots get pseudo-labels", gt=0, le=1)
    class_balance: bool = param(True, "class-balanced classification loss")
    seed: int = param(0, "seeds the weight initialisation", ge=0)


#: MoDAmix's parameter defaults, from :class:`MoDAmixParams`
DEFAULTS: dict[str, Any] = MoDAmixParams.defaults()
ADVERSARIAL = ("both", "omics", "none")
_UNLABELLED = {"", "nan", "none", "<na>"}


def _labelled(values: pd.Series) -> np.ndarray:
    s = values.astype(object)
    return (s.notna() & ~s.astype(str).str.strip().str.lower().isin(_UNLABELLED)).to_numpy()


class MoDAmix(BaseModel):
    """Per-omics extractors + joint space + subtype classifier, adapted from source to target samples.

    Parameters
    ----------
    data
        Per-spot inputs with an annotation column (``data.annotation_key``) labelling the source samples.
    modalities
        Which of ``data``'s modalities to use, in order (default: all; any number >= 1).
    source_samples, target_samples
        Values of ``obs["sample"]`` (``obs[batch_key]`` when there is no ``sample`` column). Give at least one;
        the other defaults to every remaining sample. When both are given, samples in neither are left out of
        training (they are still embedded and predicted). Target labels are never used for training.
    exclude
        Classes without a classification loss (their spots still take part in the alignment). Default: the
        MIMA paper's excluded classes (nerve, necrosis, ISUP 2/4, other, unlabelled); ``[]`` keeps all.
    stage_epochs
        Epochs of the four stages (pre-training, per-omics adversarial, joint adversarial, pseudo-labels +
        centre loss); ``train()`` runs their sum by default.
    adversarial
        ``"both"`` (per-omics and joint discriminators), ``"omics"`` (per-omics only) or ``"none"``.
    hidden, n_omics
        Hidden layers and output size of each per-omics extractor (default [256] -> 64).
    joint_hidden, n_latent
        Hidden layers of the fusion MLP and size of the joint embedding (default [128] -> 64).
    disc_hidden
        Hidden size of every domain discriminator (64).
    dropout
        Dropout after hidden layers of extractors and fusion (0.2).
    adv_weight
        Weight of every domain-confusion term (0.1; see docs/models.md for why not 1).
    pseudo_weight, center_weight
        Weights of the target pseudo-label cross-entropy and of the centre loss in stage 4 (1.0 each), times
        a ramp that rises from the first stage-4 epoch to ~1 at its end.
    threshold
        Softmax confidence from which a target spot is pseudo-labelled (0.9).
    seed
        Seeds the weight initialisation (training has its own ``seed`` option).
    """

    name = "modamix"
    supports = frozenset({"latent", "labels"})
    needs_labels = True
    train_defaults = {"epochs": sum(DEFAULTS["stage_epochs"]), "batch_size": 128, "lr": 1e-3,
                      "weight_decay": 0.0, "train_fraction": 0.9}
    Params = MoDAmixParams
    defaults = DEFAULTS

    def __init__(self, data, *, modalities: Sequence[str] | None = None, **params):
        p, mods = self._resolve_params(data, params, modalities)
        p["stage_epochs"] = [int(e) for e in p["stage_epochs"]]
        p["hidden"] = [int(h) for h in p["hidden"]]
        p["joint_hidden"] = [int(h) for h in p["joint_hidden"]]
        p["modalities"] = mods
        source, target = self._split_samples(data, p["source_samples"], p["target_samples"])
        p["source_samples"], p["target_samples"] = source, target
        p["classes"], p["exclude"] = self._classes(data, source, p["exclude"])
        p["class_balance"] = bool(p["class_balance"])
        p["class_weights"] = self._class_weights(data, source, p["classes"]) if p["class_balance"] else None
        self.train_defaults = {**type(self).train_defaults, "epochs": sum(p["stage_epochs"])}
        super().__init__(data, **p)
        self._build()

    @staticmethod
    def _samples(data) -> pd.Series:
        col = "sample" if "sample" in data.obs else data.batch_key
        return data.obs[col].astype(str)

    @classmethod
    def _split_samples(cls, data, source, target) -> tuple[list[str], list[str]]:
        samples = cls._samples(data)
        known = [str(s) for s in pd.unique(samples)]
        if source is None and target is None:
            raise ParameterError(f"MoDAmix needs source_samples= (the labelled samples) or target_samples= (the "
                                 f"samples to adapt to); the data has samples {known}")

        def as_list(v, what):
            v = [v] if isinstance(v, str) else [str(s) for s in v]
            unknown = [s for s in v if s not in known]
            if unknown:
                raise ParameterError(f"{what} {unknown} are not samples of the data (samples: {known})")
            if not v:
                raise ParameterError(f"{what} is empty; name at least one of the samples {known}")
            return list(dict.fromkeys(v))

        src = as_list(source, "source_samples") if source is not None else None
        tgt = as_list(target, "target_samples") if target is not None else None
        if src is None:
            src = [s for s in known if s not in tgt]
        if tgt is None:
            tgt = [s for s in known if s not in src]
        both = sorted(set(src) & set(tgt))
        if both:
            raise ParameterError(f"samples {both} are both source and target; a sample is one or the other")
        if not src:
            raise ParameterError(f"target_samples {tgt} leave no source sample (samples: {known}); the labelled "
                                 "source samples must be a proper subset")
        if not tgt:
            raise ParameterError(f"source_samples {src} leave no target sample (samples: {known}); MoDAmix adapts "
                                 "from labelled source samples to other, target samples: name fewer sources")
        return src, tgt

    @classmethod
    def _class_weights(cls, data, source: list[str], classes: list[str]) -> list[float]:
        """Balanced class weights of the source classification loss: n / (k * n_c) over the labelled source
        spots (scikit-learn's "balanced"). Without them, classes with few source spots were never predicted on
        the bundled sample (PIN: 33 source spots, recall 0 on 104 target spots; docs/models.md)."""
        in_source = cls._samples(data).isin(source).to_numpy()
        lab = data.labels.astype(object)
        y = lab[in_source & _labelled(lab)].astype(str)
        counts = np.array([max(int((y == c).sum()), 1) for c in classes], dtype=float)
        return [float(w) for w in counts.sum() / (len(counts) * counts)]

    @classmethod
    def _classes(cls, data, source: list[str], exclude) -> tuple[list[str], list[str]]:
        from spatialmix.conventions import PAPER_EXCLUDED, excluded_classes

        labels = data.labels
        if labels is None:
            raise ParameterError("MoDAmix trains on labelled source spots but the data has no annotation column; "
                                 "build it with annotation_key= (e.g. MultiModalData.from_spatialdata(sdata, "
                                 "annotation_key='pathologist'))")
        exclude = list(PAPER_EXCLUDED) if exclude is None else [str(c) for c in exclude]
        in_source = cls._samples(data).isin(source).to_numpy()
        lab = labels.astype(object)
        ok = in_source & _labelled(lab)
        present = sorted(set(lab[ok].astype(str)))
        dropped = excluded_classes(present, exclude)
        classes = [c for c in present if c not in dropped]
        if len(classes) < 2:
            raise ParameterError(
                f"MoDAmix needs labelled spots of at least 2 classes in the source samples {source}; column "
                f"{data.annotation_key!r} has {present or 'no labels'} there"
                + (f" of which {dropped} are excluded (exclude=)" if dropped else ""))
        return classes, exclude

    # -- building ------------------------------------------------------------------------------------------
    def _build(self) -> None:
        import torch

        p = self.params
        torch.manual_seed(int(p["seed"]))
        self.module = MoDAmixModule(
            [len(self.var_names[m]) for m in self.modalities], len(p["classes"]), hidden=p["hidden"],
            n_omics=int(p["n_omics"]), joint_hidden=p["joint_hidden"], n_latent=int(p["n_latent"]),
            disc_hidden=int(p["disc_hidden"]), dropout=float(p["dropout"]), stage_epochs=p["stage_epochs"],
            adversarial=p["adversarial"], adv_weight=float(p["adv_weight"]), pseudo_weight=float(p["pseudo_weight"]),
            center_weight=float(p["center_weight"]), threshold=float(p["threshold"]), names=self.modalities,
            class_weights=p.get("class_weights"),
        )

    @classmethod
    def _from_config(cls, config: dict, data):
        # the training length follows the saved stages; the networks are rebuilt by BaseModel._from_config
        obj = super()._from_config(config, data)
        obj.train_defaults = {**cls.train_defaults, "epochs": sum(obj.params["stage_epochs"])}
        return obj

    @property
    def classes(self) -> list[str]:
        return list(self.params["classes"])

    def stage_of_epoch(self, epoch: int) -> int:
        """The stage (1-4) a global training epoch (from 1) belongs to."""
        return self.module.stage_of(epoch)

    # -- tensors -------------------------------------------------------------------------------------------
    def _inputs(self, data) -> dict:
        import torch

        out = {}
        for m in self.modalities:
            out[f"x_{m}"] = torch.as_tensor(data.dense(m))
            out[f"mask_{m}"] = torch.as_tensor(np.asarray(data.mask[m], bool))
        return out

    def _class_codes(self, data) -> np.ndarray:
        """Class code per spot (-1: unlabelled, excluded or unknown class)."""
        lab = data.labels.astype(object)
        codes = pd.Index(self.classes).get_indexer(lab.astype(str))
        codes[~_labelled(lab)] = -1
        return codes.astype(np.int64)

    def _training_groups(self) -> dict:
        import torch

        if self.data is None:
            raise ModelError("this model was loaded without data; pass data to MoDAmix.load(path, data) to train it")
        data = self.data
        samples = self._samples(data)
        t = self._inputs(data)
        groups = {}
        for g, names in (("source", self.params["source_samples"]), ("target", self.params["target_samples"])):
            rows = np.flatnonzero(samples.isin(names).to_numpy())
            if len(rows) == 0:
                raise ModelError(f"the data has no spots of the {g} samples {names}")
            idx = torch.as_tensor(rows)
            groups[g] = {k: v[idx] for k, v in t.items()}
        # target labels are never used: only the source group carries classes
        src_rows = np.flatnonzero(samples.isin(self.params["source_samples"]).to_numpy())
        groups["source"]["y"] = torch.as_tensor(self._class_codes(data)[src_rows])
        if int((groups["source"]["y"] >= 0).sum()) == 0:
            raise ModelError(f"no labelled spots of the classes {self.classes} in the source samples")
        return groups

    def _infer(self, data, key: str, *, batch_size: int = 4096) -> np.ndarray:
        t = self._inputs(data)

        def step(sl, device):
            xs = [t[f"x_{m}"][sl].to(device) for m in self.modalities]
            masks = [t[f"mask_{m}"][sl].to(device) for m in self.modalities]
            return self.module.predict(xs, masks)[key]

        return self._in_chunks(data.n_obs, step, batch_size=batch_size)

    # -- outputs -------------------------------------------------------------------------------------------
    def get_latent_representation(self, kind: str = "joint", modality: str | None = None, *, data=None) -> np.ndarray:
        """``kind="joint"`` (default): the domain-adapted joint embedding (n_spots x n_latent);
        ``"omics"``: the per-omics features of ``modality`` (NaN rows for spots without that modality)."""
        self._check_trained()
        if kind not in ("joint", "omics"):
            raise ParameterError(f"kind must be 'joint' or 'omics', got {kind!r}")
        data = self._resolve_data(data)
        if kind == "joint":
            return self._infer(data, "joint")
        if modality not in self.modalities:
            raise ParameterError(f"kind='omics' needs modality= one of {self.modalities}, got {modality!r}")
        h = self._infer(data, f"omics_{modality}")
        h[~np.asarray(data.mask[modality], bool)] = np.nan
        return h

    def predict_proba(self, *, data=None) -> pd.DataFrame:
        """Class probabilities per spot (columns: the training classes)."""
        self._check_trained()
        data = self._resolve_data(data)
        return pd.DataFrame(self._infer(data, "proba"), index=data.obs.index, columns=self.classes)

    def predict_labels(self, *, data=None) -> pd.DataFrame:
        """Predicted class and its softmax confidence for every spot (the target spots are the ones that
        matter: source spots were trained on)."""
        proba = self.predict_proba(data=data)
        p = proba.to_numpy()
        best = p.argmax(axis=1)
        return pd.DataFrame({
            "label": pd.Categorical.from_codes(best, categories=self.classes),
            "confidence": p[np.arange(len(p)), best].astype(float),
        }, index=proba.index)

    def get_corrected(self, modality: str, *, data=None):
        raise self._unsupported(
            "batch-corrected features", "its joint embedding (get_latent_representation()) is a domain-adapted "
            "representation learnt for classification, not the measured features with the batch effect removed "
            "(the reference code calls it 'batch corrected features'; it is not). Use MIMA.get_corrected for "
            "corrected features")

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        p = self.params
        return (f"MoDAmix({state}; sources {p['source_samples']} -> targets {p['target_samples']}; "
                f"{len(p['classes'])} classes; adversarial={p['adversarial']}; stages {p['stage_epochs']}; "
                f"{n_parameters(self.module):,} parameters)")
