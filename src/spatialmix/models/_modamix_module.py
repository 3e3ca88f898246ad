"""The MoDAmix networks and losses as pure ``torch.nn`` modules (no data handling, no training loop).

MoDAmix (Choi & Chae, Sci Rep 2026) adapts a subtype classifier from labelled *source* samples to unlabelled
*target* samples in four stages:

1. per-omics feature extractors (one MLP per modality), a fusion MLP into a joint space and a classifier,
   trained with cross-entropy on the labelled source spots;
2. + one domain discriminator per modality on that modality's features (source vs target). Each step first
   updates the discriminators (their own optimiser, detached features), then the networks with a
   domain-confusion loss (the discriminator's output pushed to 1/2 for both domains);
3. + a joint domain discriminator on the fused embedding;
4. + pseudo-labels for confident target spots (cross-entropy) and a centre loss pulling source spots (their
   labels) and pseudo-labelled target spots toward per-class centres in the joint space, with a weight that
   ramps up with the *global* epoch inside stage 4.

Later stages keep the earlier losses. The engine (:mod:`spatialmix.train`) asks :meth:`MoDAmixModule.phases`
which stage an epoch belongs to and passes it back as ``phase`` (plus a ``"discriminate"`` phase from stage 2). Batches come in two groups, ``source/*`` and
``target/*`` (the engine draws ``batch_size`` rows of each per step), holding ``x_<m>``, ``mask_<m>`` and, for
the source, ``y`` (class code, -1 = no classification loss: unlabelled or excluded class).

Missing modalities: a spot without modality ``m`` is never passed through ``m``'s extractor nor shown to
``m``'s discriminator; its ``m`` slot of the fusion input is zero and a per-modality availability indicator is
appended to the fusion input (zero + mask indicator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

STAGES = ("pretrain", "omics_adversarial", "joint_adversarial", "pseudo_label")
DISCRIMINATE = "discriminate"


def mlp(sizes: Sequence[int], dropout: float, *, last_activation: bool = True) -> nn.Sequential:
    """Linear + ReLU (+ dropout) for every consecutive pair of ``sizes``; no activation after the last layer
    when ``last_activation`` is False."""
    layers: list[nn.Module] = []
    pairs = list(zip(sizes[:-1], sizes[1:]))
    for i, (a, b) in enumerate(pairs):
        layers.append(nn.Linear(a, b))
        if last_activation or i < len(pairs) - 1:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def balanced_domain_loss(logits_source: torch.Tensor, logits_target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of a domain discriminator (source = 0, target = 1), each domain weighted one half
    whatever its size in the batch; 0 (no adversarial signal) when either side has no spot."""
    if logits_source.numel() == 0 or logits_target.numel() == 0:
        return logits_source.new_zeros(()) + 0.0 * (logits_source.sum() + logits_target.sum())
    ls = F.binary_cross_entropy_with_logits(logits_source.float(), torch.zeros_like(logits_source, dtype=torch.float))
    lt = F.binary_cross_entropy_with_logits(logits_target.float(), torch.ones_like(logits_target, dtype=torch.float))
    return 0.5 * (ls + lt)


def confusion_loss(logits_source: torch.Tensor, logits_target: torch.Tensor) -> torch.Tensor:
    """Domain confusion (Tzeng et al. 2015): cross-entropy of the discriminator's output against 1/2 for both
    domains, each weighted one half; minimal (log 2) when the discriminator cannot tell them apart. Bounded
    below, unlike a reversed gradient, so the features cannot "win" by exploding."""
    if logits_source.numel() == 0 or logits_target.numel() == 0:
        return logits_source.new_zeros(()) + 0.0 * (logits_source.sum() + logits_target.sum())
    ls = F.binary_cross_entropy_with_logits(logits_source.float(), torch.full_like(logits_source, 0.5, dtype=torch.float))
    lt = F.binary_cross_entropy_with_logits(logits_target.float(), torch.full_like(logits_target, 0.5, dtype=torch.float))
    return 0.5 * (ls + lt)


def sigmoid_ramp(progress: float) -> float:
    """DANN's schedule 2 / (1 + exp(-10 p)) - 1: 0 at p = 0, ~1 at p = 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


class MoDAmixModule(nn.Module):
    """Per-omics extractors, fusion, classifier, per-omics and joint domain discriminators, class centres.

    Parameters
    ----------
    n_features
        Features per modality, in modality order.
    n_classes
        Number of subtype classes (from the labelled source spots).
    hidden
        Hidden layer sizes of each per-omics extractor.
    n_omics
        Size of each per-omics feature vector.
    joint_hidden
        Hidden layer sizes of the fusion MLP.
    n_latent
        Size of the joint embedding.
    disc_hidden
        Hidden size of every domain discriminator.
    stage_epochs
        Epochs of the four stages; epochs after their sum stay in stage 4.
    adversarial
        ``"both"`` (per-omics from stage 2, joint from stage 3), ``"omics"`` (per-omics only) or ``"none"``.
    adv_weight, pseudo_weight, center_weight
        Weights of the domain-confusion terms, the pseudo-label cross-entropy and the centre loss (the last two
        times the stage-4 ramp).
    threshold
        Softmax confidence from which a target spot gets a pseudo-label.
    center_momentum
        Share of a class centre replaced by the batch's class mean at each stage-4 step.
    """

    def __init__(self, n_features: Sequence[int], n_classes: int, *, hidden: Sequence[int], n_omics: int,
                 joint_hidden: Sequence[int], n_latent: int, disc_hidden: int, dropout: float,
                 stage_epochs: Sequence[int], adversarial: str = "both", adv_weight: float = 1.0,
                 pseudo_weight: float = 1.0, center_weight: float = 1.0, threshold: float = 0.9,
                 center_momentum: float = 0.5, names: Sequence[str] | None = None,
                 class_weights: Sequence[float] | None = None):
        super().__init__()
        if adversarial not in ("both", "omics", "none"):
            raise ValueError(f"adversarial must be 'both', 'omics' or 'none', got {adversarial!r}")
        self.names = list(names) if names is not None else [f"m{i}" for i in range(len(n_features))]
        # weights of the source classification loss (None: unweighted); a buffer, saved with the weights
        self.register_buffer("class_weight", torch.as_tensor(class_weights, dtype=torch.float32)
                             if class_weights is not None else torch.ones(n_classes))
        self.n_classes = int(n_classes)
        self.n_latent = int(n_latent)
        self.n_omics = int(n_omics)
        self.stage_epochs = [int(e) for e in stage_epochs]
        self.adversarial = adversarial
        self.adv_weight = float(adv_weight)
        self.pseudo_weight = float(pseudo_weight)
        self.center_weight = float(center_weight)
        self.threshold = float(threshold)
        self.center_momentum = float(center_momentum)
        self.extractors = nn.ModuleList(mlp([n, *hidden, n_omics], dropout) for n in n_features)
        n_mod = len(n_features)
        self.fusion = mlp([n_mod * n_omics + n_mod, *joint_hidden, n_latent], dropout, last_activation=False)
        self.classifier = nn.Linear(n_latent, n_classes)
        if adversarial in ("both", "omics"):
            self.omics_discriminators = nn.ModuleDict({
                name: mlp([n_omics, disc_hidden, 1], 0.0, last_activation=False) for name in self.names})
        else:
            self.omics_discriminators = None
        self.joint_discriminator = (mlp([n_latent, disc_hidden, 1], 0.0, last_activation=False)
                                    if adversarial == "both" else None)
        self.register_buffer("centers", torch.zeros(n_classes, n_latent))
        self.register_buffer("center_seen", torch.zeros(n_classes, dtype=torch.bool))
        self.epoch = 1  # set by phases(); drives the stage-4 ramp

    # -- schedule -----------------------------------------------------------------------------------------
    def stage_of(self, epoch: int) -> int:
        """Stage (1-4) of a global epoch (counted from 1); epochs past the schedule stay in stage 4."""
        end = 0
        for stage, n in enumerate(self.stage_epochs, start=1):
            end += n
            if epoch <= end:
                return stage
        return 4

    def stage_start(self, stage: int) -> int:
        """First global epoch of ``stage``."""
        return sum(self.stage_epochs[:stage - 1]) + 1

    def ramp(self, epoch: int) -> float:
        """Weight multiplier of the pseudo-label and centre losses at a global epoch: 0 before stage 4, then
        DANN's sigmoid ramp over stage 4 with progress (epoch - start + 1) / length, so the first stage-4 epoch
        already has a positive weight (the reference counted epochs from 0 in every stage: its weight stayed 0)."""
        if self.stage_of(epoch) < 4:
            return 0.0
        length = max(self.stage_epochs[3], 1)
        progress = min(1.0, (epoch - self.stage_start(4) + 1) / length)
        return sigmoid_ramp(progress)

    def phases(self, epoch: int, step: int) -> list[tuple[str, str]]:
        """The engine's hook. Stage 1: one update of the networks. From stage 2 (with discriminators): first
        the discriminators learn to tell source from target on detached features (``"discriminate"``, their
        own optimiser), then the networks learn the stage's loss including the domain-confusion terms."""
        self.epoch = int(epoch)
        stage = self.stage_of(epoch)
        plan = [(STAGES[stage - 1], "main")]
        if stage >= 2 and self.omics_discriminators is not None:
            plan.insert(0, (DISCRIMINATE, "disc"))
        return plan

    def discriminators(self) -> list[nn.Module]:
        return [d for d in (self.omics_discriminators, self.joint_discriminator) if d is not None]

    def configure_optimizers(self, lr: float, weight_decay: float) -> dict[str, torch.optim.Optimizer]:
        """``main``: extractors, fusion and classifier; ``disc``: the domain discriminators (when any)."""
        disc = [p for d in self.discriminators() for p in d.parameters()]
        disc_ids = {id(p) for p in disc}
        main = [p for p in self.parameters() if id(p) not in disc_ids]
        opts = {"main": torch.optim.Adam(main, lr=lr, weight_decay=weight_decay)}
        if disc:
            opts["disc"] = torch.optim.Adam(disc, lr=lr, weight_decay=weight_decay)
        return opts

    # -- networks -----------------------------------------------------------------------------------------
    def omics_features(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Per-omics features; rows of spots without the modality are zero and never pass its extractor."""
        out = []
        for extractor, x, mask in zip(self.extractors, xs, masks):
            h = x.new_zeros(x.shape[0], self.n_omics)
            if bool(mask.any()):
                h = h.index_put((mask,), extractor(x[mask]).to(h.dtype))
            out.append(h)
        return out

    def fuse(self, hs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor]) -> torch.Tensor:
        """Joint embedding from the available per-omics features (zeros + availability indicators)."""
        ind = torch.stack([m.to(hs[0].dtype) for m in masks], dim=1)
        return self.fusion(torch.cat([*hs, ind], dim=1))

    def embed(self, xs, masks) -> tuple[list[torch.Tensor], torch.Tensor]:
        hs = self.omics_features(xs, masks)
        return hs, self.fuse(hs, masks)

    def discriminator_inputs(self, i: int, hs_source: torch.Tensor, hs_target: torch.Tensor,
                             mask_source: torch.Tensor, mask_target: torch.Tensor):
        """The rows modality ``i``'s discriminator sees: that modality's own source and target spots."""
        return hs_source[mask_source], hs_target[mask_target]

    # -- losses -------------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], phase: str | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        xs_s = [batch[f"source/x_{n}"] for n in self.names]
        ms_s = [batch[f"source/mask_{n}"] for n in self.names]
        y = batch["source/y"]
        if phase is None:  # validation: the classification loss on the held-out labelled source spots
            _, z_s = self.embed(xs_s, ms_s)
            cls = self._cross_entropy(self.classifier(z_s), y, self.class_weight)
            return cls, {"cls": cls}
        if phase not in (*STAGES, DISCRIMINATE):
            raise ValueError(f"unknown MoDAmix phase {phase!r}; expected one of {(*STAGES, DISCRIMINATE)}")
        xs_t = [batch[f"target/x_{n}"] for n in self.names]
        ms_t = [batch[f"target/mask_{n}"] for n in self.names]
        n_s = y.shape[0]
        # one pass over source + target rows together
        xs = [torch.cat([a, b]) for a, b in zip(xs_s, xs_t)]
        ms = [torch.cat([a, b]) for a, b in zip(ms_s, ms_t)]
        if phase == DISCRIMINATE:
            return self._discriminator_loss(xs, ms, n_s, ms_s, ms_t)
        stage = STAGES.index(phase) + 1
        hs, z = self.embed(xs, ms)
        logits = self.classifier(z)
        terms: dict[str, torch.Tensor] = {"cls": self._cross_entropy(logits[:n_s], y, self.class_weight)}
        total = terms["cls"]
        if stage >= 2:
            for key, logit_s, logit_t in self._domain_logits(hs, z, n_s, ms_s, ms_t, stage):
                terms[f"adv_{key}"] = confusion_loss(logit_s, logit_t)
                total = total + self.adv_weight * terms[f"adv_{key}"]
        if stage >= 4:
            w = self.ramp(self.epoch)
            logits_t = logits[n_s:]
            with torch.no_grad():
                conf, pseudo = F.softmax(logits_t.detach().float(), dim=1).max(dim=1)
                confident = conf >= self.threshold
            pl = torch.where(confident, pseudo, torch.full_like(pseudo, -1))
            terms["pseudo"] = self._cross_entropy(logits_t, pl)
            terms["center"] = self._center_loss(z, torch.cat([y, pl]))
            total = total + w * (self.pseudo_weight * terms["pseudo"] + self.center_weight * terms["center"])
        return total, terms

    def _domain_logits(self, hs, z, n_s, ms_s, ms_t, stage):
        """(name, source logits, target logits) of every discriminator active in ``stage``; each per-omics
        discriminator sees only its own modality's spots."""
        out = []
        if stage >= 2 and self.omics_discriminators is not None:
            for i, name in enumerate(self.names):
                src, tgt = self.discriminator_inputs(i, hs[i][:n_s], hs[i][n_s:], ms_s[i], ms_t[i])
                disc = self.omics_discriminators[name]
                out.append((name, disc(src).squeeze(1), disc(tgt).squeeze(1)))
        if stage >= 3 and self.joint_discriminator is not None:
            d = self.joint_discriminator(z).squeeze(1)
            out.append(("joint", d[:n_s], d[n_s:]))
        return out

    def _discriminator_loss(self, xs, ms, n_s, ms_s, ms_t):
        """The discriminators' update: source-vs-target cross-entropy on features that carry no gradient back
        into the networks."""
        stage = self.stage_of(self.epoch)
        with torch.no_grad():
            hs, z = self.embed(xs, ms)
        terms = {f"disc_{key}": balanced_domain_loss(ls, lt)
                 for key, ls, lt in self._domain_logits(hs, z, n_s, ms_s, ms_t, stage)}
        total = sum(terms.values())
        return total, terms

    @staticmethod
    def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(Class-weighted) mean cross-entropy over rows with a class (y >= 0); 0 when there are none."""
        keep = y >= 0
        if not bool(keep.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[keep].float(), y[keep], weight=weight)

    def _center_loss(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean squared distance (per dimension) of labelled rows to their class centre; the centres follow the
        batch's class means (exponential moving average, detached; set from the first batch with the class)."""
        keep = labels >= 0
        if not bool(keep.any()):
            return z.sum() * 0.0
        zk, yk = z[keep], labels[keep]
        if self.training:
            with torch.no_grad():
                onehot = F.one_hot(yk, self.n_classes).to(zk.dtype)
                counts = onehot.sum(0)
                present = counts > 0
                means = (onehot.t() @ zk.detach()) / counts.clamp_min(1).unsqueeze(1)
                fresh = present & ~self.center_seen
                old = present & self.center_seen
                self.centers[fresh] = means[fresh].to(self.centers.dtype)
                a = self.center_momentum
                self.centers[old] = ((1 - a) * self.centers[old] + a * means[old]).to(self.centers.dtype)
                self.center_seen |= present
        usable = self.center_seen[yk]
        if not bool(usable.any()):
            return z.sum() * 0.0
        diff = zk[usable].float() - self.centers[yk[usable]].float()
        return diff.pow(2).mean()

    # -- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, xs, masks) -> dict[str, torch.Tensor]:
        """Joint embedding, per-omics features and class probabilities (eval mode is the caller's job)."""
        hs, z = self.embed(xs, masks)
        return {"joint": z, "proba": F.softmax(self.classifier(z).float(), dim=1),
                **{f"omics_{n}": h for n, h in zip(self.names, hs)}}


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
