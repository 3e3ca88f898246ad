"""The engine's GPU accelerations (issue 16), checked on the CPU: a compiled training step (and its clean fallback),
static mini-batch shapes, fused Adam, and what a run records about them. TF32 and the figures need a GPU."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from spatialmix.errors import ParameterError
from spatialmix.models._base import BaseModel


class _Net(torch.nn.Module):
    """A small deterministic auto-encoder (no dropout, no sampling): compiled and eager runs must agree."""

    def __init__(self, d=12, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.enc = torch.nn.Sequential(torch.nn.Linear(d, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
        self.dec = torch.nn.Linear(4, d)
        self.rows_seen: list[int] = []

    def forward(self, batch):
        x = batch["x"]
        if self.training:
            self.rows_seen.append(int(x.shape[0]))
        recon = ((self.dec(self.enc(x)) - x) ** 2).mean()
        small = 1e-3 * (self.enc[0].weight ** 2).sum()
        return recon + small, {"recon": recon, "l2": small}


class _Tiny(BaseModel):
    """The engine's protocol and nothing else."""

    name = "tiny"
    train_defaults = {"epochs": 3, "batch_size": 32, "lr": 1e-2, "train_fraction": 0.8}

    def __init__(self, n=200, seed=0):
        self.x = torch.as_tensor(np.random.default_rng(seed).normal(size=(n, 12)), dtype=torch.float32)
        self.module = _Net(seed=seed)
        self._reset_training_state()

    def _training_tensors(self):
        return {"x": self.x}

    def _fingerprint(self):
        return {"model": self.name, "rows": int(self.x.shape[0])}


def _losses(model):
    return np.array([[h["loss"], h["val_loss"]] for h in model.history if "loss" in h])


def test_static_shapes_give_full_mini_batches_only():
    """160 training rows in mini-batches of 64: by default 3 steps (64, 64, 32); with static shapes 2 steps of
    64 (the 32 left out are other rows each epoch), and the run records what it used."""
    m = _Tiny().train(batch_size=64)
    assert m.module.rows_seen == [64, 64, 32] * 3
    assert m.train_config["accelerations"] == {"compile": False, "compile_mode": None, "static_shapes": False,
                                               "tf32": False, "fused_adam": False,
                                               "batched_decoders": None}  # CPU: nothing changed; None: _Net
    # has no batched_decoders switch (one decoder call per step)
    s = _Tiny().train(batch_size=64, static_shapes=True)
    assert s.module.rows_seen == [64, 64] * 3
    assert s.train_config["schedule"]["steps_per_epoch"] == 2
    assert s.train_config["accelerations"]["static_shapes"] is True
    # fewer rows than one mini-batch: one step with all of them
    assert _Tiny(n=40).train(batch_size=64, static_shapes=True).module.rows_seen == [32] * 3


def test_a_failing_compile_falls_back_to_the_uncompiled_step_with_a_warning(monkeypatch):
    """If torch.compile cannot compile the step, training goes on uncompiled from the same state (same result
    as never compiling) and says why; nothing is half-updated by the failed attempt."""
    class _Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *a, **k):
            raise RuntimeError("backend compiler failed: no C compiler found")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: _Broken(module))
    eager = _Tiny().train(batch_size=64)
    with pytest.warns(RuntimeWarning, match="torch.compile failed for tiny .*no C compiler"):
        fell_back = _Tiny().train(compile=True, batch_size=64)
    acc = fell_back.train_config["accelerations"]
    assert acc["compile"] is False and "no C compiler" in acc["compile_error"]
    assert acc["static_shapes"] is True  # asked for by compile=True; kept
    again = _Tiny().train(static_shapes=True, batch_size=64)
    np.testing.assert_array_equal(_losses(fell_back), _losses(again))
    assert not np.array_equal(_losses(eager), _losses(again))  # static shapes did change the steps
    # a real error of the model is not hidden by the fallback: it surfaces from the uncompiled step too
    bad = _Tiny()
    bad.x[3, 2] = float("nan")
    with pytest.warns(RuntimeWarning), pytest.raises(Exception, match="non-finite"):
        bad.train(compile=True)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="torch.compile's CPU backend needs a C compiler")
def test_the_compiled_step_trains_like_the_uncompiled_one():
    """compile=True on the CPU (the default only on CUDA): the same losses and weights as the uncompiled step
    with the same static shapes, to float rounding; validation and outputs use the uncompiled module."""
    torch.set_num_threads(1)
    ref = _Tiny().train(static_shapes=True, batch_size=64)
    comp = _Tiny().train(compile=True, batch_size=64)
    assert comp.train_config["accelerations"]["compile"] is True, comp.train_config["accelerations"]
    np.testing.assert_allclose(_losses(comp), _losses(ref), rtol=1e-4)
    for a, b in zip(comp.module.parameters(), ref.module.parameters()):
        np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-3, atol=1e-5)
    assert not any(k.startswith("_orig_mod") for k in comp.module.state_dict())  # saved weights unchanged


def test_fused_adam_is_the_same_optimiser_in_one_kernel():
    """On CUDA the engine rebuilds Adam / AdamW with fused=True (groups and hyper-parameters kept); the update
    is the same to rounding (checked here on the CPU, where torch also has a fused Adam)."""
    from spatialmix.train import _fused_adam

    def run(fused):
        torch.manual_seed(0)
        net = torch.nn.Linear(6, 3)
        opt = torch.optim.AdamW([{"params": [net.weight], "lr": 1e-2}, {"params": [net.bias], "lr": 1e-3}],
                                weight_decay=0.1, betas=(0.8, 0.99))
        if fused:
            opt = _fused_adam(opt)
            assert opt.defaults["fused"] and all(g["fused"] for g in opt.param_groups)
            assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-3] and opt.defaults["betas"] == (0.8, 0.99)
        x = torch.randn(20, 6)
        for _ in range(5):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
        return [p.detach().clone() for p in net.parameters()]

    for a, b in zip(run(True), run(False)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    sgd = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
    assert _fused_adam(sgd) is sgd  # other optimisers are left as they are


def test_acceleration_options_are_declared_and_checked():
    with pytest.raises(ParameterError, match="compile_mode"):
        _Tiny().train(compile_mode="fastest")
    with pytest.raises(ParameterError, match="tf32"):
        _Tiny().train(tf32="yes")


def test_mima_trains_in_bf16_mixed_precision_with_float32_outputs():
    """precision="bf16-mixed" (Lightning Fabric's autocast; on the CPU too): MIMA trains to about the fp32 losses,
    and its outputs come back as float32 with the same NaN rule."""
    small_model, data = _mima_toy()
    torch.set_num_threads(1)
    fp32 = small_model(data).train(epochs=4, lr=1e-3, batch_size=32)
    bf16 = small_model(data).train(epochs=4, lr=1e-3, batch_size=32, precision="bf16-mixed")
    assert bf16.train_config["precision"] == "bf16-mixed"
    a, b = _losses(fp32), _losses(bf16)
    assert np.isfinite(b).all() and b[-1, 0] < b[0, 0]  # it learns
    np.testing.assert_allclose(b, a, rtol=0.05)  # bf16 keeps ~3 significant digits; the losses agree to 5 %
    z = bf16.get_latent_representation()
    assert z.dtype == np.float32 and np.isfinite(z).all()
    corrected = bf16.get_corrected("b")
    assert corrected.dtype == np.float32 and np.isnan(corrected[~data.mask["b"]]).all()


def _mima_toy():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from test_train import small_model, toy_data

    return small_model, toy_data()


def test_batched_decoders_make_one_call_per_modality_with_the_same_losses_and_gradients():
    """batched_decoders (issue 16): MIMA's 5 decoder calls per modality and step (reconstruction from the product
    of experts, 3 translations into it, reconstruction from its own shared latent) become 1 on the stacked
    latents; without dropout (evaluation mode) every loss term and every gradient is the unbatched one's."""
    small_model, data = _mima_toy()
    torch.set_num_threads(1)
    module = small_model(data).module
    names = module.names
    rows = slice(0, 64)
    xs = [torch.as_tensor(data.X[m][rows]) for m in names]
    masks = [torch.as_tensor(data.mask[m][rows]) for m in names]
    batch = torch.as_tensor(pd.factorize(data.obs["sample"])[0][rows])
    calls = [0] * len(names)
    for i, vae in enumerate(module.vaes):
        vae.decoder_out.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    module.eval()
    expected = [2 + sum(t == i for _, t in module.translation_pairs()) for i in range(len(names))]
    assert expected == [5, 5, 5]

    def run(batched):
        module.batched_decoders = batched
        module.zero_grad()
        calls[:] = [0] * len(names)
        total, terms = module.loss(xs, masks, batch)
        total.backward()
        grads = [p.grad.clone() for p in module.parameters() if p.grad is not None]
        return list(calls), {k: float(v.detach()) for k, v in terms.items()}, grads

    calls_u, terms_u, grads_u = run(False)
    calls_b, terms_b, grads_b = run(True)
    assert calls_u == expected and calls_b == [1, 1, 1]
    assert terms_b.keys() == terms_u.keys()  # the same terms, in the same order
    for k in terms_u:
        assert terms_b[k] == pytest.approx(terms_u[k], rel=1e-5, abs=1e-7), k
    assert len(grads_b) == len(grads_u)
    for gb, gu in zip(grads_b, grads_u):
        torch.testing.assert_close(gb, gu, rtol=1e-4, atol=1e-6)


def test_batched_decoders_are_off_on_the_cpu_by_default_and_train_when_asked():
    """Off on the CPU unless asked (seeded CPU runs stay what they were); asked for, MIMA trains to about the
    same losses (only the dropout masks differ) and the run records it."""
    small_model, data = _mima_toy()
    torch.set_num_threads(1)
    plain = small_model(data).train(epochs=6, lr=1e-3, batch_size=32)
    assert plain.train_config["accelerations"]["batched_decoders"] is False
    assert plain.module.batched_decoders is False
    batched = small_model(data).train(epochs=6, lr=1e-3, batch_size=32, batched_decoders=True)
    assert batched.train_config["accelerations"]["batched_decoders"] is True
    a, b = _losses(plain), _losses(batched)
    assert np.isfinite(b).all() and b[-1, 0] < 0.9 * b[0, 0]  # it learns
    assert not np.array_equal(a, b)  # other dropout masks: not the unbatched run replayed
    np.testing.assert_allclose(b[-1], a[-1], rtol=0.1)
    with pytest.raises(ParameterError, match="batched_decoders"):
        small_model(data).train(epochs=1, batched_decoders="sometimes")
