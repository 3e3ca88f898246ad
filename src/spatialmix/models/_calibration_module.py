"""Multi-batch calibration (Niu, Xu, Wei, Qian, Wang, 2021) as pure ``torch.nn`` modules: no data handling,
no training loop.

- :class:`Calibrator` ``C``: BN, FC, dropout, Tanhshrink, FC at the input's width.
- :class:`LabelDiscriminator` ``D``: BN, FC to 100, a residual LeakyReLU-FC block at 100, then FC through 50 and
  16 to the classes (one logit + sigmoid for two classes, softmax otherwise).
- one :class:`Reconstructor` ``R_i`` per labelled source batch: FC, dropout, Tanhshrink, FC (the paper's form),
  maps calibrated features back to that batch's (standardised) input.
- :class:`CalibrationModule` holds them, the standardisation statistics (buffers, so they travel in the
  state_dict), the losses (multi-bandwidth Gaussian MMD^2 averaged over batch pairs, reconstruction MSE, label
  cross-entropy) and the two-step schedule for :mod:`spatialmix.train` (``configure_optimizers`` / ``phases``).

Every loss term is mapped to its equation in ``docs/models.md`` ("Calibration", "Losses and schedule").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

#: MMD kernel bandwidths, as multiples of the mean pairwise squared distance of the pooled pair (computed from the
#: data; detached from the graph only with ``detach_bandwidth=True``, the paper's reference, see :func:`mmd2`)
MMD_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0)
#: width of the label discriminator's hidden layers (the paper's)
DISCRIMINATOR_WIDTHS = (100, 50, 16)


class Calibrator(nn.Module):
    """``C``: BatchNorm, Linear(d, d), Dropout, Tanhshrink, Linear(d, d)."""

    def __init__(self, n_features: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm1d(n_features), nn.Linear(n_features, n_features),
            nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Tanhshrink(),
            nn.Linear(n_features, n_features),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LabelDiscriminator(nn.Module):
    """``D``: BN, FC to 100, residual LeakyReLU-FC block at 100, FC 100 -> 50 -> 16 -> classes."""

    def __init__(self, n_features: int, n_classes: int):
        super().__init__()
        w1, w2, w3 = DISCRIMINATOR_WIDTHS
        self.norm = nn.BatchNorm1d(n_features)
        self.project = nn.Linear(n_features, w1)
        self.residual = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(w1, w1))
        self.head = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(w1, w2), nn.LeakyReLU(0.2), nn.Linear(w2, w3),
                                  nn.LeakyReLU(0.2), nn.Linear(w3, 1 if n_classes == 2 else n_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.project(self.norm(z))
        h = h + self.residual(h)
        return self.head(h)


class Reconstructor(nn.Module):
    """``R_i``: Linear(d, d), Dropout, Tanhshrink, Linear(d, d) (the paper's form; the rate is the calibrator's)."""

    def __init__(self, n_features: int, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_features, n_features),
                                 nn.Dropout(dropout) if dropout > 0 else nn.Identity(), nn.Tanhshrink(),
                                 nn.Linear(n_features, n_features))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] = MMD_BANDWIDTHS, *,
         detach_bandwidth: bool = False, wx: torch.Tensor | None = None,
         wy: torch.Tensor | None = None) -> torch.Tensor:
    """Biased squared MMD between samples ``x`` and ``y`` with a sum of Gaussian kernels (eq. 1's distance):

    ``k(a, b) = sum_j exp(-|a - b|^2 / (b_j * s))``, ``s`` = mean squared distance between the distinct rows of
    the pooled sample, ``b_j`` in ``bandwidths``; ``MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y)``.
    ``s`` is computed from the data. ``detach_bandwidth=True`` (the paper's reference, which takes it from the
    distances' ``.data``) keeps the gradient from flowing through it; then shrinking ``C(x)`` towards a point
    lowers the MMD by itself, and it did: C(x) collapsed to a per-feature standard deviation of 0.002 and the
    target macro-F1 fell from 0.98 to 0.87 (``benchmarks/calibration_paper_form.py``). The default (ours) keeps
    ``s`` in the graph, so the loss is invariant to the scale of ``C(x)`` in value and in gradient."""
    z = torch.cat([x, y], dim=0)
    d2 = torch.cdist(z, z).pow(2)
    n = z.shape[0]
    base = ((d2.detach() if detach_bandwidth else d2).sum() / max(n * n - n, 1)).clamp_min(1e-8)
    k = sum(torch.exp(-d2 / (base * b)) for b in bandwidths)
    nx = x.shape[0]
    kxx, kyy, kxy = k[:nx, :nx], k[nx:, nx:], k[:nx, nx:]
    if wx is None and wy is None:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    # weighted (label shift, ours): the rows of x and y carry weights that sum to 1 within each sample
    a = (wx if wx is not None else torch.ones(nx, device=z.device)).to(k.dtype)
    b = (wy if wy is not None else torch.ones(y.shape[0], device=z.device)).to(k.dtype)
    a, b = a / a.sum(), b / b.sum()
    return a @ kxx @ a + b @ kyy @ b - 2 * (a @ kxy @ b)


def pairwise_mmd(z: torch.Tensor, batch: torch.Tensor, n_batches: int, min_spots: int = 2, *,
                 detach_bandwidth: bool = False, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 1: the mean of MMD^2 over the pairs of batches that have at least ``min_spots`` spots in the minibatch
    (zero when fewer than two batches are present). ``weights`` (one per row, ours): each batch's rows weighted
    (normalised within the batch) in the MMD, e.g. source spots by ``target prior / source prior`` of their class."""
    present = [b for b in range(n_batches) if int((batch == b).sum()) >= min_spots]
    total, n_pairs = z.new_zeros(()), 0
    for i, a in enumerate(present):
        for b in present[i + 1:]:
            sa, sb = batch == a, batch == b
            total = total + mmd2(z[sa], z[sb], detach_bandwidth=detach_bandwidth,
                                 wx=None if weights is None else weights[sa],
                                 wy=None if weights is None else weights[sb])
            n_pairs += 1
    return total / max(n_pairs, 1)


class CalibrationModule(nn.Module):
    """Calibrator, label discriminator, per-source reconstructors, losses and the two-step schedule.

    Parameters
    ----------
    n_features
        Width of the (concatenated, standardised) input.
    n_batches
        Number of batches (MMD^2 is averaged over the pairs of them present in a minibatch).
    n_sources
        Number of labelled source batches (one reconstructor each).
    n_classes
        Number of classes (>= 2; two classes use one logit and a binary cross-entropy).
    alpha1, alpha2, beta, gamma
        Loss weights: step A minimises ``alpha1 * L_C + beta * L_D``, step B ``alpha2 * L_C + gamma * L_R``.
    lambda1, lambda2
        How many times step A / step B repeat per training step.
    dropout
        Dropout of the calibrator and of the reconstructors.
    detach_bandwidth
        Detach the MMD kernels' bandwidth from the graph (the paper's reference) or not (default, ours): see
        :func:`mmd2`.
    """

    #: BatchNorm in training mode needs at least two rows: the training engine merges a one-row last mini-batch
    #: into the one before it (``spatialmix.train``, ``min_batch_rows``)
    min_batch_rows = 2

    def __init__(self, n_features: int, n_batches: int, n_sources: int, n_classes: int, *, alpha1: float,
                 alpha2: float, beta: float, gamma: float, lambda1: int, lambda2: int, dropout: float,
                 detach_bandwidth: bool = False, label_shift: bool = False, prior_momentum: float = 0.02):
        super().__init__()
        if n_classes < 2:
            raise ValueError("the label discriminator needs at least two classes")
        self.n_batches = int(n_batches)
        self.n_classes = int(n_classes)
        self.weights = {"alpha1": float(alpha1), "alpha2": float(alpha2), "beta": float(beta), "gamma": float(gamma)}
        self.lambda1, self.lambda2 = int(lambda1), int(lambda2)
        self.detach_bandwidth = bool(detach_bandwidth)
        self.label_shift = bool(label_shift)
        self.prior_momentum = float(prior_momentum)
        # label shift (ours): the sources' class composition and the targets' estimated one; source spots are
        # weighted by target_prior / source_prior of their class in the MMD
        # (registered only with label_shift, so that models saved without it load unchanged)
        if self.label_shift:
            self.register_buffer("source_prior", torch.full((n_classes,), 1.0 / n_classes))
            self.register_buffer("target_prior", torch.full((n_classes,), 1.0 / n_classes))
        self.calibrator = Calibrator(n_features, dropout)
        self.discriminator = LabelDiscriminator(n_features, n_classes)
        self.reconstructors = nn.ModuleList([Reconstructor(n_features, dropout) for _ in range(n_sources)])
        # standardisation: x_std = (x - mean) / scale; set by the model from its training data, saved with the weights
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self._optimizers: dict[str, torch.optim.Optimizer] | None = None

    # -- pieces --------------------------------------------------------------------------------------------
    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale

    def unstandardise(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.scale + self.mean

    def calibrate(self, x_std: torch.Tensor) -> torch.Tensor:
        return self.calibrator(x_std)

    def class_probabilities(self, z: torch.Tensor) -> torch.Tensor:
        """(n, n_classes) class probabilities of calibrated features ``z``."""
        logits = self.discriminator(z)
        if self.n_classes == 2:
            p1 = torch.sigmoid(logits[:, 0])
            return torch.stack([1 - p1, p1], dim=1)
        return torch.softmax(logits, dim=1)

    def reconstruct(self, z: torch.Tensor, source: int) -> torch.Tensor:
        return self.reconstructors[source](z)

    def set_source_prior(self, prior) -> None:
        """The labelled source spots' class composition; the target estimate starts from it."""
        p = torch.as_tensor(prior, dtype=torch.float32, device=self.source_prior.device)
        self.source_prior.copy_(p / p.sum())
        self.target_prior.copy_(self.source_prior)

    def update_target_prior(self, z: torch.Tensor, is_target: torch.Tensor) -> None:
        """One EM step of the target class composition (Saerens et al. 2002) on this minibatch's target spots,
        averaged into ``target_prior`` with momentum ``prior_momentum``: D's probabilities re-weighted by
        target_prior / source_prior, normalised, averaged over the spots. D runs in eval mode without gradients
        (its BatchNorm statistics do not move)."""
        if not bool(is_target.any()):
            return
        with torch.no_grad():
            was = self.discriminator.training
            self.discriminator.eval()
            p = self.class_probabilities(z[is_target].detach())
            self.discriminator.train(was)
            q = p * (self.target_prior / self.source_prior.clamp_min(1e-8))
            q = q / q.sum(dim=1, keepdim=True).clamp_min(1e-12)
            self.target_prior.mul_(1 - self.prior_momentum).add_(self.prior_momentum * q.mean(dim=0))

    def mmd_weights(self, label: torch.Tensor) -> torch.Tensor | None:
        """Per-row MMD weights under label shift: target_prior / source_prior of a labelled spot's class, 1 for
        unlabelled and target spots; None (unweighted, the paper's) without ``label_shift``."""
        if not self.label_shift:
            return None
        w = torch.ones(label.shape[0], device=label.device)
        keep = label >= 0
        ratio = self.target_prior / self.source_prior.clamp_min(1e-8)
        w[keep] = ratio[label[keep]]
        return w

    # -- losses --------------------------------------------------------------------------------------------
    def loss_mmd(self, z: torch.Tensor, batch: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 1 (``L_C``): MMD^2 averaged over the batch pairs present in the minibatch."""
        return pairwise_mmd(z, batch, self.n_batches, detach_bandwidth=self.detach_bandwidth, weights=weights)

    def loss_label(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        keep = label >= 0
        if not bool(keep.any()):
            return z.new_zeros(())
        logits = self.discriminator(z[keep])
        if self.n_classes == 2:
            return F.binary_cross_entropy_with_logits(logits[:, 0], label[keep].float())
        return F.cross_entropy(logits, label[keep])

    def loss_recon(self, z: torch.Tensor, x_std: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Eq. 2: mean squared error of ``R_i(C(x))`` vs ``x`` over the spots of source batches (mean over sources
        present in the minibatch)."""
        total, n = z.new_zeros(()), 0
        for i in range(len(self.reconstructors)):
            sel = source == i
            if bool(sel.any()):
                total = total + F.mse_loss(self.reconstructors[i](z[sel]), x_std[sel])
                n += 1
        return total / max(n, 1)

    def forward(self, batch: dict, phase: str | None = None):
        """``phase="A"``: ``alpha1 * L_C + beta * L_D`` (updates C, D); ``"B"``: ``alpha2 * L_C + gamma * L_R``
        (updates C, R_i); ``None`` (validation): ``alpha1 * L_C + beta * L_D + gamma * L_R``."""
        x = batch["x"]
        z = self.calibrate(x)
        w = self.weights
        if self.label_shift and phase == "A" and self.training:
            self.update_target_prior(z, batch["source"] < 0)
        l_c = self.loss_mmd(z, batch["batch"], self.mmd_weights(batch["label"]))
        if phase == "A":
            l_d = self.loss_label(z, batch["label"])
            return w["alpha1"] * l_c + w["beta"] * l_d, {"mmd_a": l_c, "label": l_d}
        if phase == "B":
            l_r = self.loss_recon(z, x, batch["source"])
            return w["alpha2"] * l_c + w["gamma"] * l_r, {"mmd_b": l_c, "recon": l_r}
        if phase is not None:
            raise ValueError(f"unknown phase {phase!r}; the calibration schedule has phases 'A' and 'B'")
        l_d = self.loss_label(z, batch["label"])
        l_r = self.loss_recon(z, x, batch["source"])
        return (w["alpha1"] * l_c + w["beta"] * l_d + w["gamma"] * l_r,
                {"mmd": l_c, "label": l_d, "recon": l_r})

    # -- schedule (spatialmix.train) -----------------------------------------------------------------------
    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """Two Adam optimisers, created once per training: ``"cd"`` (C + D) for step A, ``"cr"`` (C + every R_i)
        for step B."""
        cd = list(self.calibrator.parameters()) + list(self.discriminator.parameters())
        cr = list(self.calibrator.parameters()) + list(self.reconstructors.parameters())
        self._optimizers = {"cd": torch.optim.Adam(cd, lr=lr, weight_decay=weight_decay),
                            "cr": torch.optim.Adam(cr, lr=lr, weight_decay=weight_decay)}
        return self._optimizers

    def phases(self, epoch: int, step: int) -> list[tuple[str, str]]:
        return [("A", "cd")] * self.lambda1 + [("B", "cr")] * self.lambda2


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def estimate_parameters(n_features: int, n_sources: int, n_classes: int) -> int:
    """Number of parameters of a :class:`CalibrationModule`, without allocating it: the module is built on
    PyTorch's meta device (shapes only), so the count always follows the architecture. C and every R_i are two
    d x d layers each, so it grows as ``(2 + 2 * n_sources) * d^2``."""
    with torch.device("meta"):
        module = CalibrationModule(int(n_features), 1, int(n_sources), int(n_classes), alpha1=0.0, alpha2=0.0,
                                   beta=0.0, gamma=0.0, lambda1=1, lambda2=1, dropout=0.0)
    return n_parameters(module)
