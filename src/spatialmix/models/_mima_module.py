"""The MIMA networks and loss as pure ``torch.nn`` modules (no data handling, no training loop).

One :class:`ModalityVAE` per modality: an encoder to three Gaussian latents (shared, private, batch) and a
decoder of their sum. :class:`MIMAModule` combines the shared latents of all modalities by a product of
experts (with a standard-normal prior expert and a per-spot availability mask) and computes the paper's loss.
``docs/models.md`` explains every choice where the paper leaves room.

Why one file of about 480 lines: it is the networks and loss of one model. :class:`MIMAModule` (~290 lines) owns
one :class:`ModalityVAE` per modality, and the functions above it (``product_of_experts``, ``kl_normal``,
``masked_mse``, ``nb_nll``, ``grad_reverse``) are the pieces of its inference and loss, used by no other model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0  # exp(-12) ~ 6e-6: keeps the product of experts' precisions finite
NB_TARGET_SUM = 1e4  # the counts' normalisation (spatialmix.data: normalize_total(1e4) + log1p)


def mlp(sizes: Sequence[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU + dropout for every consecutive pair of ``sizes`` (empty for a single size)."""
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class GaussianHead(nn.Module):
    """Dropout (latent layers) then two linear maps to the mean and the log-variance of a Gaussian."""

    def __init__(self, n_in: int, n_latent: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mu = nn.Linear(n_in, n_latent)
        self.logvar = nn.Linear(n_in, n_latent)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.drop(h)
        return self.mu(h), self.logvar(h).clamp(LOGVAR_MIN, LOGVAR_MAX)


class ModalityVAE(nn.Module):
    """Encoder (features -> shared, private; sample -> batch) and mirrored decoder of one modality.

    ``hidden`` empty means the inputs are projected to the latents directly (the paper's choice for
    modalities of at most ~1,000 features). The batch latent is a separate Gaussian per sample: its head reads
    the one-hot sample code, not the features (see ``docs/models.md``: translation needs the *target's* batch
    latent for spots where the target was not measured, and a batch head that cannot see the features cannot
    carry biology away from the batch-corrected output).
    """

    def __init__(self, n_features: int, n_batches: int, *, n_latent: int, hidden: Sequence[int],
                 dropout: float, latent_dropout: float, batch_input: str = "sample",
                 encode_covariate: bool = True, latent_dropout_at: str = "heads", likelihood: str = "mse"):
        super().__init__()
        if likelihood not in ("mse", "nb"):
            raise ValueError(f"likelihood must be 'mse' or 'nb', got {likelihood!r}")
        self.likelihood = likelihood
        self.n_features = n_features
        self.n_batches = n_batches
        self.batch_input = batch_input
        self.encode_covariate = encode_covariate
        self.body = mlp([n_features, *hidden], dropout)
        h = hidden[-1] if hidden else n_features
        n_head = h + (n_batches if encode_covariate else 0)
        head_drop = latent_dropout if latent_dropout_at == "heads" else 0.0
        self.shared = GaussianHead(n_head, n_latent, head_drop)
        self.private = GaussianHead(n_head, n_latent, head_drop)
        # dropout on the (summed) latent sample before decoding: the "latent layer" read as the latent itself
        self.z_drop = nn.Dropout(latent_dropout) if latent_dropout_at == "z" and latent_dropout > 0 else nn.Identity()
        n_batch_in = n_batches + (h if batch_input == "sample+features" else 0)
        self.batch = GaussianHead(n_batch_in, n_latent, 0.0)
        dec_hidden = list(reversed(hidden))
        self.decoder_body = mlp([n_latent, *dec_hidden], dropout)
        self.decoder_out = nn.Linear(dec_hidden[-1] if dec_hidden else n_latent, n_features)
        if likelihood == "nb":  # per-feature inverse dispersion theta = exp(log_theta), as scVI's gene dispersion
            self.log_theta = nn.Parameter(torch.zeros(n_features))

    def encode(self, x: torch.Tensor, onehot: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        h = self.body(x)
        b_in = torch.cat([onehot, h], dim=1) if self.batch_input == "sample+features" else onehot
        hc = torch.cat([h, onehot], dim=1) if self.encode_covariate else h
        return {"shared": self.shared(hc), "private": self.private(hc), "batch": self.batch(b_in)}

    def encode_batch(self, onehot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch latent from the sample alone (only with ``batch_input='sample'``)."""
        if self.batch_input != "sample":
            raise ValueError("the batch latent depends on the features with batch_input='sample+features'")
        return self.batch(onehot)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw output: the features themselves (``mse``) or per-feature logits of the expression
        proportions (``nb``; :meth:`expression` turns them into the input's units)."""
        return self.decoder_out(self.decoder_body(self.z_drop(z)))

    def expression(self, out: torch.Tensor) -> torch.Tensor:
        """A decoder output in the units of the model's input: as is (``mse``); ``log1p(1e4 * softmax)`` for
        ``nb``, the same ``normalize_total(1e4) + log1p`` scale as the encoder's input (``spatialmix.data``)."""
        if self.likelihood == "mse":
            return out
        return torch.log1p(NB_TARGET_SUM * torch.softmax(out.float(), dim=1)).to(out.dtype)

    def reconstruction_loss(self, x: torch.Tensor, out: torch.Tensor, mask: torch.Tensor,
                            counts: torch.Tensor | None) -> torch.Tensor:
        """``mse``: mean squared error per feature of ``x``; ``nb``: negative-binomial negative log-likelihood
        per feature of the raw ``counts`` with mean library size x softmax(out) (each averaged over the spots
        where ``mask`` is True)."""
        if self.likelihood == "mse":
            return masked_mse(x, out, mask)
        if counts is None:
            raise ValueError("the negative-binomial likelihood needs the modality's raw counts")
        return masked_mean(nb_nll(counts, out, self.log_theta), mask)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -grad


def grad_reverse(x: torch.Tensor) -> torch.Tensor:
    """Identity forward, negated gradient backward (domain-adversarial training, Ganin & Lempitsky 2015)."""
    return _GradReverse.apply(x)


def product_of_experts(mus: Sequence[torch.Tensor], logvars: Sequence[torch.Tensor],
                       masks: Sequence[torch.Tensor], prior: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian product of the experts present per spot (``masks``) and a standard-normal prior expert.

    Precision-weighted: T = 1 + sum_m mask_m / var_m, mu = sum_m mask_m mu_m / var_m / T, var = 1 / T.
    A spot missing every modality gets the prior. ``prior=False`` leaves the prior expert out (T without the
    1; a single expert is then returned as it is; a spot with no expert gets mean 0 and a huge variance).
    """
    precision = torch.ones_like(mus[0]) if prior else torch.full_like(mus[0], 1e-8)
    weighted = torch.zeros_like(mus[0])
    for mu, logvar, mask in zip(mus, logvars, masks):
        p = torch.exp(-logvar) * mask.unsqueeze(1).to(mu.dtype)
        precision = precision + p
        weighted = weighted + mu * p
    return weighted / precision, -torch.log(precision)


def kl_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions, per spot."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def masked_mse(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error per feature, averaged over the spots where ``mask`` is True (0 when none)."""
    per_spot = (x_hat.float() - x.float()).pow(2).mean(dim=1)
    m = mask.to(per_spot.dtype)
    return (per_spot * m).sum() / m.sum().clamp_min(1.0)


def nb_nll(counts: torch.Tensor, logits: torch.Tensor, log_theta: torch.Tensor) -> torch.Tensor:
    """Negative-binomial negative log-likelihood per spot, averaged over the features.

    Mean mu = l * softmax(logits) with l the spot's observed library size (the sum of its counts, as scVI's
    ``use_observed_lib_size``), inverse dispersion theta = exp(log_theta) per feature:
    -log NB(x; mu, theta) = -[lgamma(x + theta) - lgamma(theta) - lgamma(x + 1)
                              + theta log(theta / (theta + mu)) + x log(mu / (theta + mu))].
    Written out rather than taken from ``torch.distributions.NegativeBinomial`` (whose logits parametrisation
    would need log mu - log theta and gives the same value) so the hand-checked test reads like this formula;
    the mean over features (not scVI's sum) keeps the term on the scale of the MSE terms and of the KL weight
    0.01 they were tuned with."""
    x = counts.float()
    lib = x.sum(dim=1, keepdim=True).clamp_min(1.0)
    log_rho = torch.log_softmax(logits.float(), dim=1)
    theta = log_theta.float().exp()
    log_theta_mu = torch.logaddexp(log_theta.float(), torch.log(lib) + log_rho)  # log(theta + mu)
    ll = (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1.0)
          + theta * (log_theta.float() - log_theta_mu) + x * (torch.log(lib) + log_rho - log_theta_mu))
    return -ll.mean(dim=1)


def masked_mean(v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(v.dtype)
    return (v * m).sum() / m.sum().clamp_min(1.0)


class MIMAModule(nn.Module):
    """Product-of-experts VAE over any number of modalities.

    Parameters
    ----------
    n_features
        Features per modality, in modality order.
    n_batches
        Number of samples (batches); the batch latent has one Gaussian per sample and modality.
    n_latent
        Size of each latent (shared, private, batch).
    hidden
        Hidden layer sizes per modality (``[]`` = direct projection).
    beta
        KL weights: ``{"poe", "shared", "private", "batch"}``.
    translation
        Include the ordered-pair translation terms in the shared loss.
    """

    def __init__(self, n_features: Sequence[int], n_batches: int, *, n_latent: int = 100,
                 hidden: Sequence[Sequence[int]], dropout: float = 0.1, latent_dropout: float = 0.3,
                 beta: dict[str, float], translation: bool = True, batch_input: str = "sample",
                 encode_covariate: bool = True, adversarial: float = 0.0, latent_dropout_at: str = "heads",
                 adversarial_on: Sequence[str] = ("shared", "private"), names: Sequence[str] | None = None,
                 translation_detach: bool = False, translation_poe: bool = False, translation_weight: float = 1.0,
                 likelihoods: Sequence[str] | None = None):
        super().__init__()
        likelihoods = list(likelihoods) if likelihoods is not None else ["mse"] * len(n_features)
        self.translation_weight = float(translation_weight)
        # one decoder call per modality per training step (set by the training engine's `batched_decoders`)
        self.batched_decoders = False
        self.translation_detach = bool(translation_detach)
        self.translation_poe = bool(translation_poe)
        self.names = list(names) if names is not None else [f"m{i}" for i in range(len(n_features))]
        self.n_batches = n_batches
        self.n_latent = n_latent
        self.beta = dict(beta)
        self.translation = translation
        self.adversarial = float(adversarial)
        self.adversarial_on = tuple(adversarial_on)
        self.vaes = nn.ModuleList(
            ModalityVAE(n, n_batches, n_latent=n_latent, hidden=h, dropout=dropout,
                        latent_dropout=latent_dropout, batch_input=batch_input, encode_covariate=encode_covariate,
                        latent_dropout_at=latent_dropout_at, likelihood=lik)
            for n, h, lik in zip(n_features, hidden, likelihoods)
        )
        # batch classifiers on each modality's shared and private latent means, trained through a gradient
        # reversal so the encoders learn to hide the sample from them (only when adversarial > 0)
        if self.adversarial > 0 and n_batches > 1:
            heads = [f"{kind}_{name}" for name in self.names for kind in self.adversarial_on if kind != "poe"]
            heads += ["poe"] if "poe" in self.adversarial_on else []
            self.discriminators = nn.ModuleDict({
                head: nn.Sequential(nn.Linear(n_latent, 64), nn.ReLU(), nn.Linear(64, n_batches)) for head in heads
            })
        else:
            self.discriminators = None

    # -- pieces -------------------------------------------------------------------------------------------
    def translation_pairs(self) -> list[tuple[tuple[int, ...], int]]:
        """The (sources, target) translations the loss trains.

        The paper's term (``translation_poe=False``): every ordered pair of modalities, the source's own shared
        latent decoded by the target. With ``translation_poe`` (ours) the sources' product of experts with the
        prior, as :meth:`translate` decodes it, for each single source and for all the other modalities
        together, and in training with more than three modalities one random subset of the others per step
        (so every subset ``translate`` may be asked for is trained, in expectation)."""
        n = len(self.vaes)
        pairs = [((s,), t) for t in range(n) for s in range(n) if s != t]
        if not self.translation_poe or n < 3:
            return pairs
        for t in range(n):
            others = tuple(i for i in range(n) if i != t)
            pairs.append((others, t))
            if n > 3 and self.training:
                k = int(torch.randint(2, n - 1, (1,)).item())
                pick = torch.randperm(len(others))[:k].sort().values.tolist()
                pairs.append((tuple(others[i] for i in pick), t))
        return pairs

    def onehot(self, batch: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return F.one_hot(batch, self.n_batches).to(dtype)

    @staticmethod
    def sample(mu: torch.Tensor, logvar: torch.Tensor, stochastic: bool) -> torch.Tensor:
        if not stochastic:
            return mu
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    # -- the one inference and generative path --------------------------------------------------------------
    # As scvi-tools separates ``inference`` (encoders) from ``generative`` (decoders): the loss terms and every
    # output go through these four methods, so an output cannot decode something training never decoded.
    def inference(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], batch: torch.Tensor, *,
                  stochastic: bool, modalities: Sequence[int] | None = None) -> dict:
        """Encode ``modalities`` (default all) and, when all are encoded, form the product of experts.

        Returns ``onehot``, ``enc`` ({index: {"shared" | "private" | "batch": (mean, log-variance)}}), ``z``
        ({index: {kind: latent}}, samples when ``stochastic`` else the means) and, for all modalities,
        ``poe`` (mean, log-variance) and ``z_poe``. Sampling order (PoE first, then each modality's shared,
        private, batch) is fixed, so a seeded training run is reproducible."""
        which = range(len(self.vaes)) if modalities is None else modalities
        onehot = self.onehot(batch, xs[next(iter(which))].dtype)
        enc = {i: self.vaes[i].encode(xs[i], onehot) for i in which}
        out = {"onehot": onehot, "enc": enc}
        if modalities is None:
            out["poe"] = product_of_experts([e["shared"][0] for e in enc.values()],
                                            [e["shared"][1] for e in enc.values()], masks)
            out["z_poe"] = self.sample(*out["poe"], stochastic)
        out["z"] = {i: {k: self.sample(*e[k], stochastic) for k in e} for i, e in enc.items()}
        return out

    def translation_latent(self, inf: dict, masks: Sequence[torch.Tensor], sources: Sequence[int], *,
                           stochastic: bool) -> torch.Tensor:
        """The shared latent a translation from ``sources`` decodes: with ``translation_poe`` (ours) the
        product of the sources' experts and the prior expert; otherwise (the paper's term) the source's own
        shared latent, and for several sources their product without the prior."""
        enc = inf["enc"]
        if self.translation_poe or len(sources) > 1:
            mu, lv = product_of_experts([enc[s]["shared"][0] for s in sources], [enc[s]["shared"][1] for s in sources],
                                        [masks[s] for s in sources], prior=self.translation_poe)
            return self.sample(mu, lv, stochastic)
        return inf["z"][sources[0]]["shared"]

    def target_batch_latent(self, inf: dict, target: int, batch: torch.Tensor, *, encoded: bool,
                            batch_table: torch.Tensor | None = None) -> torch.Tensor:
        """The target's batch latent for a translation: ``encoded`` (the loss, where the target was measured)
        its encoding's latent; otherwise from the sample alone, or with ``batch_input='sample+features'`` (a
        translation does not have the target's features) each sample's mean batch latent from ``batch_table``."""
        if encoded:
            return inf["z"][target]["batch"]
        vae = self.vaes[target]
        if vae.batch_input == "sample":
            return vae.encode_batch(inf["onehot"])[0]
        if batch_table is None:
            raise ValueError("translation with the target's batch latent needs batch_table when the batch "
                             "latent reads the features (batch_input='sample+features')")
        dtype = inf["onehot"].dtype
        return batch_table.to(batch.device, dtype)[batch]

    def generative(self, modality: int, shared: torch.Tensor, private: torch.Tensor | None = None,
                   batch_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Decode shared (+ private) (+ batch) by ``modality``'s decoder: its raw output (the features for
        ``mse``, logits of the expression proportions for ``nb``; :meth:`ModalityVAE.expression` converts)."""
        return self.vaes[modality].decode(self.decoder_input(shared, private, batch_latent))

    @staticmethod
    def decoder_input(shared: torch.Tensor, private: torch.Tensor | None = None,
                      batch_latent: torch.Tensor | None = None) -> torch.Tensor:
        """What a decoder decodes: the sum of the shared latent, and the private and batch latents if given."""
        z = shared
        if private is not None:
            z = z + private
        if batch_latent is not None:
            z = z + batch_latent
        return z

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training engine's entry point: ``batch`` holds ``x_<name>``, ``mask_<name>`` and ``batch``."""
        xs = [batch[f"x_{n}"] for n in self.names]
        masks = [batch[f"mask_{n}"] for n in self.names]
        counts = [batch.get(f"counts_{n}") for n in self.names]
        return self.loss(xs, masks, batch["batch"], counts)

    # -- loss ---------------------------------------------------------------------------------------------
    def loss(self, xs: Sequence[torch.Tensor], masks: Sequence[torch.Tensor], batch: torch.Tensor,
             counts: Sequence[torch.Tensor | None] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and its named terms for one mini-batch (sampled latents in training mode). ``counts``:
        each modality's raw counts (needed by the ``nb`` likelihood only; None elsewhere)."""
        counts = list(counts) if counts is not None else [None] * len(xs)
        stochastic = self.training
        inf = self.inference(xs, masks, batch, stochastic=stochastic)
        enc, (poe_mu, poe_lv), z_poe, z = inf["enc"], inf["poe"], inf["z_poe"], inf["z"]
        terms: dict[str, torch.Tensor] = {}
        b = self.beta
        # every decoder call of the step goes through ``dec``: one call per decoding (the order the terms are
        # listed in, as before batching existed) or, with ``batched_decoders``, one call per modality on its
        # latents stacked by rows after every latent was drawn (see _Decodes)
        dec = _Decodes(self, batched=self.batched_decoders)
        recon_poe = [dec.add(i, self.decoder_input(z_poe, z[i]["private"], z[i]["batch"]))
                     for i in range(len(self.vaes))]
        translations = []
        if self.translation:
            for sources, t in self.translation_pairs():
                both = masks[t] & torch.stack([masks[i] for i in sources]).any(dim=0)
                # translation_detach (the paper's preset): the term trains the source's shared encoder and
                # the target's decoder, not the target's batch latent
                zb = self.target_batch_latent(inf, t, batch, encoded=True)
                zt = self.decoder_input(self.translation_latent(inf, masks, sources, stochastic=stochastic),
                                        batch_latent=zb.detach() if self.translation_detach else zb)
                translations.append((sources, t, both, dec.add(t, zt)))
        recon_own = [dec.add(i, self.decoder_input(z[i]["shared"], z[i]["private"], z[i]["batch"]))
                     for i in range(len(self.vaes))]
        dec.run()
        shared = 0.0
        for i, (vae, x, mask) in enumerate(zip(self.vaes, xs, masks)):
            name = self.names[i]
            terms[f"recon_poe_{name}"] = vae.reconstruction_loss(x, dec[recon_poe[i]], mask, counts[i])
            shared = shared + terms[f"recon_poe_{name}"]
        for sources, t, both, h in translations:
            key = f"translate_{'+'.join(self.names[i] for i in sources)}_to_{self.names[t]}"
            terms[key] = self.vaes[t].reconstruction_loss(xs[t], dec[h], both, counts[t])
            shared = shared + self.translation_weight * terms[key]
        any_mod = torch.stack(list(masks)).any(dim=0)
        terms["kl_poe"] = masked_mean(kl_normal(poe_mu, poe_lv), any_mod)
        shared = shared + b["poe"] * terms["kl_poe"]
        private = 0.0
        for i, (vae, x, mask) in enumerate(zip(self.vaes, xs, masks)):
            name = self.names[i]
            terms[f"recon_{name}"] = vae.reconstruction_loss(x, dec[recon_own[i]], mask, counts[i])
            for k in ("shared", "private", "batch"):
                terms[f"kl_{k}_{name}"] = masked_mean(kl_normal(*enc[i][k]), mask)
            private = private + terms[f"recon_{name}"] + sum(
                b[k] * terms[f"kl_{k}_{name}"] for k in ("shared", "private", "batch"))
        total = shared + private
        if self.discriminators is not None:
            if "poe" in self.adversarial_on:  # the shared embedding itself, on every spot with any modality
                ce = F.cross_entropy(self.discriminators["poe"](grad_reverse(poe_mu)).float(), batch, reduction="none")
                terms["adv_poe"] = masked_mean(ce, any_mod)
                total = total + self.adversarial * terms["adv_poe"]
            for i, name in enumerate(self.names):
                for kind in self.adversarial_on:
                    if kind == "poe":
                        continue
                    logits = self.discriminators[f"{kind}_{name}"](grad_reverse(enc[i][kind][0]))
                    ce = F.cross_entropy(logits.float(), batch, reduction="none")
                    terms[f"adv_{kind}_{name}"] = masked_mean(ce, masks[i])
                    total = total + self.adversarial * terms[f"adv_{kind}_{name}"]
        return total, terms

    # -- inference outputs (means, no sampling) ------------------------------------------------------------
    # Every output is computed by ``outputs`` from one ``inference`` of the chunk, decoded by ``generative``
    # exactly as the loss decodes it; the single-output methods below are ``outputs`` with one request.
    @torch.no_grad()
    def latents(self, xs, masks, batch) -> dict[str, torch.Tensor]:
        inf = self.inference(xs, masks, batch, stochastic=False)
        out = {"poe": inf["poe"][0]}
        for i, name in enumerate(self.names):
            for kind in ("shared", "private", "batch"):
                out[f"{kind}_{name}"] = inf["enc"][i][kind][0]
        return out

    @staticmethod
    def _expert_shares(enc, masks) -> torch.Tensor:
        precisions = [torch.exp(-enc[i]["shared"][1]) * m.unsqueeze(1).to(enc[i]["shared"][1].dtype)
                      for i, m in enumerate(masks)]
        total = 1.0 + torch.stack(precisions).sum(dim=0)
        shares = [(p / total).mean(dim=1) for p in precisions] + [(1.0 / total).mean(dim=1)]
        return torch.stack(shares, dim=1)

    @torch.no_grad()
    def expert_weights(self, xs, masks, batch) -> torch.Tensor:
        """Each expert's share of the PoE precision per spot, averaged over the latent dimensions:
        (n, n_modalities + 1), the last column the prior's; rows sum to 1, a missing modality's share is 0."""
        return self.outputs(xs, masks, batch, [("expert_weights",)])[0]

    @torch.no_grad()
    def reconstruct(self, xs, masks, batch, *, modality: int, with_batch: bool) -> torch.Tensor:
        """Decode PoE + private (+ batch) of ``modality``: denoised (with batch) or batch-corrected."""
        return self.outputs(xs, masks, batch, [("denoised" if with_batch else "corrected", modality)])[0]

    @torch.no_grad()
    def translate(self, xs, masks, batch, *, sources: Sequence[int], target: int, with_batch: bool,
                  batch_table: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the sources' shared latent (:meth:`translation_latent`) + the target's batch latent by
        ``target``; only the sources are encoded.

        With ``batch_input='sample+features'`` the target's batch latent depends on its features, which a
        translation does not have: ``batch_table`` (n_batches, n_latent) then gives each sample's mean batch
        latent over the spots where the target was measured."""
        inf = self.inference(xs, masks, batch, stochastic=False, modalities=sorted(set(sources)))
        return self._translation(inf, masks, batch, sources, target, with_batch, batch_table)

    def _translation(self, inf, masks, batch, sources, target, with_batch, batch_table) -> torch.Tensor:
        zb = None
        if with_batch:  # the target's batch latent from the sample (never from the target's features)
            zb = self.target_batch_latent(inf, target, batch, encoded=False, batch_table=batch_table)
        out = self.generative(target, self.translation_latent(inf, masks, sources, stochastic=False), batch_latent=zb)
        return self.vaes[target].expression(out)

    @torch.no_grad()
    def outputs(self, xs, masks, batch, requests: Sequence[tuple]) -> list[torch.Tensor]:
        """Several outputs of one chunk from one encoding of it. ``requests``: ``("latent",)``,
        ``("private", i)``, ``("corrected", i)``, ``("denoised", i)``, ``("expert_weights",)`` or
        ``("translation", sources, target, with_batch, batch_table)``."""
        inf = self.inference(xs, masks, batch, stochastic=False)
        enc, poe_mu = inf["enc"], inf["poe"][0]
        out = []
        for req in requests:
            what = req[0]
            if what == "latent":
                out.append(poe_mu)
            elif what == "private":
                out.append(enc[req[1]]["private"][0])
            elif what in ("corrected", "denoised"):
                i = req[1]
                dec = self.generative(i, poe_mu, enc[i]["private"][0], enc[i]["batch"][0] if what == "denoised" else None)
                out.append(self.vaes[i].expression(dec))
            elif what == "expert_weights":
                out.append(self._expert_shares(enc, masks))
            elif what == "translation":
                _, sources, target, with_batch, table = req
                out.append(self._translation(inf, masks, batch, sources, target, with_batch, table))
            else:
                raise ValueError(f"unknown output request {req!r}")
        return out


class _Decodes:
    """The decoder calls of one training step.

    ``add(modality, z)`` returns a handle; after ``run()``, ``self[handle]`` is the decoder's output for ``z``.
    Unbatched, ``add`` decodes at once, so the calls (and the dropout masks they draw) come in the order the
    loss lists them, which is how every run before batching was trained: seeded results are unchanged.
    Batched, ``run`` makes one decoder call per modality on all its latents stacked by rows (the reconstruction
    from the product of experts, every translation into it, the reconstruction from its own shared latent:
    5 calls of 2-3 matrix products each become 1 with three modalities) and splits the output. Each row's
    output is the same function of its latent; only the dropout masks are drawn in another order, so a seeded
    run differs from the unbatched one by sampling, not in expectation; in evaluation mode (no dropout) the
    two agree to rounding."""

    def __init__(self, module: "MIMAModule", *, batched: bool):
        # every decoding goes through ``module.generative``, the one decode path of training and outputs
        self.module, self.batched = module, batched
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (handle, modality, latent), batched only
        self.done: list[torch.Tensor | None] = []

    def add(self, modality: int, z: torch.Tensor) -> int:
        if self.batched:
            self.pending.append((len(self.done), modality, z))
            self.done.append(None)
        else:
            self.done.append(self.module.generative(modality, z))
        return len(self.done) - 1

    def run(self) -> None:
        rows: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for h, m, z in self.pending:  # empty unless batched
            rows.setdefault(m, []).append((h, z))
        for m, items in rows.items():
            hs, zs = zip(*items)
            out = self.module.generative(m, torch.cat(zs) if len(zs) > 1 else zs[0])
            for h, part in zip(hs, out.split([len(z) for z in zs])):
                self.done[h] = part

    def __getitem__(self, handle: int) -> torch.Tensor:
        out = self.done[handle]
        if out is None:
            raise RuntimeError("a batched decoding was read before run()")
        return out


def n_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
