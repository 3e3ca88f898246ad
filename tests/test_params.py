"""Parameters are declared once (spatialmix.params): the Python API, a TOML run configuration, the CLI's
training flags and docs/config.md all follow the same declaration, so a changed range changes all of them."""
import math
from pathlib import Path

import numpy as np
import pytest

from spatialmix.errors import ConfigError, ParameterError
from spatialmix.models import MODELS
from spatialmix.params import describe, field_info, markdown_table, render_docs
from spatialmix.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_docs_config_tables_are_the_declarations():
    """docs/config.md's parameter tables are generated (make docs-config): every model and the engine."""
    from spatialmix.config import documented_params

    text = (ROOT / "docs" / "config.md").read_text()
    decl = documented_params()
    for key in decl:
        assert f"<!-- params:{key} -->" in text, f"docs/config.md has no generated table for {key}"
    assert render_docs(text, decl) == text, "docs/config.md is out of date: run `make docs-config`"
    # and the generated table changes when a declaration does (the check can fail)
    mima = decl["model.mima"]
    assert "| `n_latent` | whole number >= 1 | `100` |" in markdown_table(mima)
    stale = text.replace("| `n_latent` | whole number >= 1 | `100` |", "| `n_latent` | whole number >= 1 | `64` |")
    assert render_docs(stale, decl) != stale


def test_descriptions_come_from_the_declared_types_and_ranges():
    mima = MODELS["mima"].Params
    assert describe(mima, "n_latent") == "a whole number >= 1"
    assert describe(mima, "dropout") == "a number in [0, 1)"
    assert describe(mima, "count_likelihood") == "'mse' or 'nb'"
    assert describe(mima, "count_likelihood", "toml") == '"mse" or "nb"'
    assert describe(mima, "translation_loss", "toml") == "true or false (no quotes)"
    assert describe(mima, "beta_poe") == "a number >= 0 or None"
    assert describe(TrainConfig, "epochs") == "a whole number >= 1 or 'auto'"
    assert describe(TrainConfig, "lr") == "a positive number"
    assert describe(TrainConfig, "train_fraction") == "a number in (0, 1]"
    assert describe(MODELS["modamix"].Params, "hidden") == "a list of whole numbers >= 1"
    info = field_info(mima, "dropout")
    assert (info.kind, info.low, info.high, info.high_open) == ("float", 0, 1, True)
    assert field_info(mima, "preset").choices == ("spatialmix", "paper")


def test_checks_refuse_silent_conversions_and_accept_numpy_scalars():
    mima = MODELS["mima"].Params
    for key, bad, phrase in [("n_latent", True, "must be a whole number >= 1, got True"),
                             ("n_latent", "5", "must be a whole number >= 1, got '5'"),
                             ("n_latent", 2.0, "must be a whole number >= 1, got 2.0"),
                             ("beta", float("nan"), "must be a finite number >= 0, got nan"),
                             ("beta", math.inf, "must be a finite number >= 0, got inf"),
                             ("adversarial_on", "shared+nothing", "'+'-joined latents among"),
                             ("preset", "papr", "must be 'spatialmix' or 'paper', got 'papr'")]:
        _, problems = mima.problems({key: bad})
        assert len(problems) == 1 and phrase in problems[0].message, (key, bad, problems)
    checked, problems = mima.problems({"n_latent": np.int64(8), "beta": np.float32(0.5), "dropout": 0})
    assert not problems and checked == {"n_latent": 8, "beta": 0.5, "dropout": 0.0}
    assert type(checked["n_latent"]) is int and type(checked["dropout"]) is float
    checked, problems = MODELS["modamix"].Params.problems({"stage_epochs": (1, 2, 3, 4)})
    assert not problems and checked["stage_epochs"] == [1, 2, 3, 4]
    _, problems = MODELS["modamix"].Params.problems({"stage_epochs": [0, 1, 1, 1]})
    assert "must be 4 whole numbers" in problems[0].message


def _bad_value(cls, key):
    """A value the declaration of ``key`` refuses (None when no simple one exists)."""
    info = field_info(cls, key)
    if info.kind == "bool":
        return "yes"
    if info.kind == "choice":
        return "no-such-choice"
    if info.kind in ("int", "float") and info.low is not None:
        return info.low - 1
    return None


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_constructor_and_the_configuration_refuse_the_same_values(name, tmp_path):
    """One declaration, one rule: each bad value the model's constructor refuses is refused by [model] of a run
    configuration with the same description of what is allowed (naming the file's line), and every default is
    accepted by both."""
    from spatialmix.config import _Context, _Key, _model_checks

    cls = MODELS[name]
    decl = cls.Params
    assert set(decl.model_fields) == set(cls.defaults)
    checks = _model_checks(name)
    path = tmp_path / "run.toml"
    ctx = _Context(path, "")
    tried = 0
    for key in decl.model_fields:
        bad = _bad_value(decl, key)
        if bad is None:
            continue
        tried += 1
        with pytest.raises(ParameterError) as api:
            decl.check({key: bad}, owner=f"{cls.__name__} parameter")
        with pytest.raises(ConfigError) as toml:
            checks[key](_Key(ctx, "model", key), bad, tmp_path)
        assert f"[model] {key} " in str(toml.value) and f"parameter {key} " in str(api.value)

        def rule(message):  # what is allowed, as either place words it ("true or false" / "True or False")
            said = message.split(" must be ", 1)[1].split(", got ")[0] if " must be " in message else message
            return said.lower().replace('"', "").replace("'", "").replace(" (no quotes)", "")
        assert rule(str(api.value)) == rule(str(toml.value)), (key, str(api.value), str(toml.value))
        # and the default passes both
        checks[key](_Key(ctx, "model", key), decl.defaults()[key], tmp_path) if decl.defaults()[key] is not None \
            else None
    assert tried >= 5


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_constructor_checks_through_its_declaration(name):
    """The constructors hold no range checks of their own: a bad value is refused with the declaration's words."""
    import anndata as ad
    import pandas as pd

    from spatialmix.data import MultiModalData

    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"batch": ["a", "b"] * 20, "sample": ["a", "b"] * 20, "label": ["x", "y", "y", "x"] * 10},
                       index=[f"c{i}" for i in range(40)])
    data = MultiModalData.from_anndata({m: ad.AnnData(rng.normal(size=(40, 6)).astype(np.float32), obs=obs)
                                        for m in ("a", "b")}, batch_key="batch", label_key="label",
                                       preprocessing={"a": "normalized", "b": "normalized"})
    cls = MODELS[name]
    for key in cls.Params.model_fields:
        bad = _bad_value(cls.Params, key)
        if bad is None or key == "preset":  # MIMA reads its preset first, with its own message
            continue
        with pytest.raises(ParameterError, match=rf"{cls.__name__} parameter {key} "):
            cls(data, **{key: bad})


def test_training_options_are_checked_by_the_declaration_everywhere():
    with pytest.raises(ParameterError, match=r"training option train_fraction must be a number in \(0, 1\], got 0"):
        TrainConfig.build({}, {"train_fraction": 0})
    with pytest.raises(ParameterError, match="checkpoint_every needs checkpoint_dir"):
        TrainConfig.build({}, {"checkpoint_every": 2})
    cfg = TrainConfig.build({"epochs": "auto", "lr": 1e-3}, {"lr": 1, "device": "CUDA:1"})
    assert cfg.lr == 1.0 and cfg.device == "cuda:1" and cfg.epochs == "auto"
    # the CLI's training flags are typed and checked by the same declaration
    from spatialmix.cli import _train_option

    assert _train_option("epochs")("auto") == "auto" and _train_option("epochs")("3") == 3
    assert _train_option("lr")("1e-3") == 1e-3
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number >= 0, got '-3'"):
        _train_option("seed")("-3")
    # and the preparation's flag by its own declaration
    from spatialmix.cli import _declared_option
    from spatialmix.pipeline import PrepareParams

    assert _declared_option(PrepareParams, "bin_ppm")("5") == 5.0
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive number, got '0'"):
        _declared_option(PrepareParams, "bin_ppm")("0")
