"""The TOML run configuration (spatialmix.config): the example for the bundled data loads; each mistake a user can
make gives a ConfigError that names the file, the line, the section and key, and what is allowed. No training."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import pytest

from spatialmix.config import ConfigFileNotFoundError, RunConfig, example_config, load_config
from spatialmix.errors import ConfigError, InputFileError
from spatialmix.pipeline import read_samples_csv

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ["P1_S1", "P1_S2", "P2_S1", "P2_S2"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line holding ``fragment``."""
    return next(i for i, line in enumerate(text.splitlines(), start=1) if fragment in line)


@pytest.fixture
def example(sample_data_dir) -> str:
    return example_config(sample_data_dir)


def edited(text: str, old: str, new: str) -> str:
    assert old in text, f"the example config no longer contains {old!r}"
    return text.replace(old, new, 1)


# ------------------------------------------------------------------------------------------------------------
# the example configuration
# ------------------------------------------------------------------------------------------------------------
def test_example_config_for_sample_data_loads(tmp_path, sample_data_dir, example):
    cfg = load_config(write(tmp_path / "run.toml", example))
    assert isinstance(cfg, RunConfig)
    assert [s.sample for s in cfg.samples] == SAMPLES
    assert [s.patient for s in cfg.samples] == ["P1", "P1", "P2", "P2"]
    for s in cfg.samples:
        assert s.visium.is_absolute() and s.visium.is_dir()
        for p in (s.imzml, s.he, s.annotations):
            assert p.is_absolute() and p.is_file(), p
        assert s.visium == (sample_data_dir / s.sample / "outs").resolve()
        assert s.imzml.name == f"{s.sample}.imzML"
        assert s.msi_pixel_size_um == 50.0 and s.he_microns_per_pixel == 4.0
    assert cfg.samples_csv == (sample_data_dir / "samples.csv").resolve()
    assert cfg.annotation_key == "pathologist"
    assert cfg.prepare == {"register": True, "bin_ppm": 20.0}
    assert cfg.model == "mima"
    assert cfg.model_params == {"modalities": ["rna", "msi", "morphology"], "n_latent": 100, "beta": 0.01}
    assert cfg.train == {"epochs": "auto", "lr": 1e-3, "batch_size": 128, "device": "auto", "seed": 0}
    assert cfg.outputs["translations"] == [(["msi", "morphology"], "rna"), (["rna", "morphology"], "msi")]
    assert cfg.outputs["rgb"] is True and cfg.outputs["figures"] is True
    assert cfg.path == (tmp_path / "run.toml").resolve()

    d = json.loads(json.dumps(cfg.to_dict()))  # JSON-ready provenance, laid out like the file
    assert d["config"] == str(cfg.path)
    assert [s["name"] for s in d["samples"]] == SAMPLES
    assert d["samples"][0]["imzml"] == str(cfg.samples[0].imzml)
    assert d["model"] == {"name": "mima", "modalities": ["rna", "msi", "morphology"], "n_latent": 100, "beta": 0.01}
    assert d["train"]["epochs"] == "auto"
    assert d["outputs"]["translations"] == [["msi+morphology", "rna"], ["rna+morphology", "msi"]]


def test_explicit_samples_with_relative_paths_match_the_csv(tmp_path, sample_data_dir, monkeypatch):
    folder = tmp_path / "configs"
    text = example_config(sample_data_dir, relative_to=folder, explicit_samples=True)
    assert text.count("[[samples]]") == 4 and "samples_csv" not in text
    assert 'visium = "../' in text  # written relative to the config's folder
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the config's folder, not the working directory
    cfg = load_config(write(folder / "run.toml", text))
    from_csv = read_samples_csv(sample_data_dir)
    assert cfg.samples_csv is None
    for got, want in zip(cfg.samples, from_csv, strict=True):
        assert got.sample == want.sample and got.patient == want.patient
        for key in ("visium", "imzml", "he", "annotations"):
            assert getattr(got, key) == getattr(want, key).resolve()
        assert (got.msi_pixel_size_um, got.he_microns_per_pixel) == (want.msi_pixel_size_um, want.he_microns_per_pixel)


def test_to_toml_reloads_to_the_same_configuration(tmp_path, example):
    text = edited(example, "# hidden = {rna = [300, 300], msi = []}", "hidden = {rna = [64], msi = []}")
    text = edited(text, "# mz_range = [400.0, 1000.0]", "mz_range = [400.0, 1000.0]")
    cfg = load_config(write(tmp_path / "a" / "run.toml", text))
    assert cfg.model_params["hidden"] == {"rna": [64], "msi": []}
    assert cfg.prepare["mz_range"] == (400.0, 1000.0)
    again = load_config(write(tmp_path / "b" / "resolved.toml", cfg.to_toml()))
    a, b = cfg.to_dict(), again.to_dict()
    for d in (a, b):
        d.pop("config")
        d["data"].pop("samples_csv", None)
    assert a == b


def test_every_model_parameter_and_training_option_is_accepted(tmp_path, example):
    from spatialmix.models.mima import DEFAULTS
    from spatialmix.train import TrainConfig

    from spatialmix.config import _toml

    model = {k: (0.02 if v is None else v) for k, v in DEFAULTS.items()}
    train = TrainConfig.defaults()
    train.update(checkpoint_dir="ckpt", resume=True, epochs=3, max_steps=500, early_stopping=True,
                 patience=10, compile=False, static_shapes=True, batched_decoders=False)  # TOML has no None
    text = example.split("[model]")[0] + "[model]\nname = \"mima\"\n" + "".join(
        f"{k} = {_toml(v)}\n" for k, v in model.items()) + "\n[train]\n" + "".join(
        f"{k} = {_toml(v)}\n" for k, v in train.items())
    cfg = load_config(write(tmp_path / "run.toml", text))
    assert cfg.model_params == model
    assert set(cfg.train) == set(train)
    assert cfg.train["checkpoint_dir"] == tmp_path / "ckpt"  # relative to the config's folder
    TrainConfig(**{k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.train.items()}).validate()


def test_prepare_keys_are_the_options_of_iter_prepare():
    from spatialmix.config import PREPARE_CHECKS
    from spatialmix.pipeline import iter_prepare

    options = set(inspect.signature(iter_prepare).parameters) - {"samples", "annotation_key"}
    assert set(PREPARE_CHECKS) == options


def test_docs_list_every_key(tmp_path):
    from spatialmix.config import _section_keys

    docs = (ROOT / "docs" / "config.md").read_text()
    missing = [f"[{section}] {key}" for section, keys in _section_keys().items() for key in keys
               if f"`{key}`" not in docs]
    assert not missing, f"docs/config.md does not document {missing}"
    for section in ("[data]", "[[samples]]", "[prepare]", "[model]", "[train]", "[outputs]"):
        assert section in docs
    # the documentation's example is a valid configuration once its paths point at the sample data
    block = docs.rsplit("```toml\n", 1)[1].split("```", 1)[0]
    assert "samples_csv" in block
    text = block.replace('samples_csv = "sample_data/samples.csv"', f'samples_csv = "{ROOT / "sample_data"}/samples.csv"')
    assert len(load_config(write(tmp_path / "doc.toml", text)).samples) == 4


# ------------------------------------------------------------------------------------------------------------
# errors: one per kind of mistake, each naming file, line, section, key and what is allowed
# ------------------------------------------------------------------------------------------------------------
ERRORS = {
    "syntax": ("epochs = \"auto\"", "epochs 50",
               ["not valid TOML", "column 8", "Expected '='", "the line reads: 'epochs 50"]),
    "unknown section": ("[train]", "[trian]",
                        ["[trian] is not a known section (did you mean 'train'?)", "Sections are [data], [[samples]]"]),
    "typo'd key": ("epochs = \"auto\"", "epoch = 50",
                   ["[train] epoch is not a known key (did you mean 'epochs'?)", "Allowed keys in [train]: epochs, "]),
    "key in the wrong section": ("batch_size = 128", "bin_ppm = 10",
                                 ["[train] bin_ppm is not a known key (it belongs in [prepare])"]),
    "typo'd model parameter": ("n_latent = 100", "n_latentt = 100",
                               ["[model] n_latentt is not a known key (did you mean 'n_latent'?)", "hidden"]),
    "epochs 0": ("epochs = \"auto\"", "epochs = 0", ["[train] epochs must be a whole number >= 1, got 0"]),
    "epochs float": ("epochs = \"auto\"", "epochs = 2.5", ["[train] epochs must be a whole number >= 1, got 2.5"]),
    "lr string": ("lr = 0.001", 'lr = "fast"', ['[train] lr must be a positive number, got "fast"']),
    "negative bin": ("bin_ppm = 20.0", "bin_ppm = -5", ["[prepare] bin_ppm must be a positive number, got -5"]),
    "quoted bool": ("register = true", 'register = "yes"',
                    ['[prepare] register must be true or false (no quotes), got "yes"']),
    "dropout 1": ("n_latent = 100", "dropout = 1.0", ["[model] dropout must be a number in [0, 1), got 1.0"]),
    "bad device": ('device = "auto"', 'device = "gpu"',
                   ['[train] device must be "auto", "cpu", "cuda" or "cuda:N"', 'got "gpu"']),
    "bad cuda index": ('device = "auto"', 'device = "cuda:x"', ['[train] device must be', 'got "cuda:x"']),
    "unknown model": ('name = "mima"', 'name = "mimma"',
                      ['[model] name is not a known model: "mimma" (did you mean \'mima\'?)', "Models are calibration, mima, modamix, scmodal"]),
    "unknown modality": ('modalities = ["rna", "msi", "morphology"]', 'modalities = ["rna", "histology"]',
                         ['[model] modalities names an unknown modality "histology" (did you mean \'morphology\'?)']),
    "translation to a dropped modality": ('modalities = ["rna", "msi", "morphology"]', 'modalities = ["rna", "msi"]',
                                          ["[outputs] translations entry", "which [model] modalities leaves out"]),
    "checkpoint without folder": ("# checkpoint_every = 0", "checkpoint_every = 5",
                                  ["[train] is not a valid training setup: checkpoint_every needs checkpoint_dir"]),
}


#: where each error must point: the line holding this text (default: the edited text)
ERROR_LINES = {"checkpoint without folder": "[train]", "translation to a dropped modality": "translations = "}


@pytest.mark.parametrize("case", list(ERRORS))
def test_each_mistake_gives_a_config_error(tmp_path, example, case):
    old, new, expected = ERRORS[case]
    text = edited(example, old, new)
    path = write(tmp_path / "run.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert str(path.resolve()) in message and info.value.path == path.resolve()
    line = line_of(text, ERROR_LINES.get(case, new))
    assert f"run.toml line {line}" in message


def test_a_file_that_does_not_exist(tmp_path, example):
    # the configuration itself
    with pytest.raises(ConfigFileNotFoundError, match="run configuration not found"):
        load_config(tmp_path / "nope.toml")
    # a sample's file, listed in the configuration
    text = example_config(ROOT / "sample_data", explicit_samples=True)
    text = edited(text, "P1_S2/he/P1_S2_HE.tif", "P1_S2/he/P1_S2_HE.tiff")
    path = write(tmp_path / "run.toml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, InputFileError)
    message = str(info.value)
    assert "[[samples]] #2 (P1_S2) he points to a missing H&E image" in message
    assert str((ROOT / "sample_data" / "P1_S2" / "he" / "P1_S2_HE.tiff").resolve()) in message
    assert f"run.toml line {line_of(text, 'P1_S2_HE.tiff')}" in message
    # the samples.csv itself
    text = edited(example, "sample_data/samples.csv", "sample_data/samples_old.csv")
    with pytest.raises(ConfigFileNotFoundError, match=r"\[data\] samples_csv points to a missing samples.csv"):
        load_config(write(tmp_path / "run.toml", text))


def test_missing_file_named_in_samples_csv(tmp_path, example, sample_data_dir):
    data = tmp_path / "data"
    shutil.copytree(sample_data_dir / "P1_S1", data / "P1_S1", ignore=shutil.ignore_patterns("*.tif", "truth"))
    write(data / "samples.csv", (sample_data_dir / "samples.csv").read_text().splitlines()[0] + "\n"
          + "P1_S1,P1,P1_S1/outs,P1_S1/msi/P1_S1.imzML,50,P1_S1/he/P1_S1_HE.tif,4,P1_S1/annotations.csv\n")
    text = edited(example, str(sample_data_dir / "samples.csv"), "data/samples.csv")
    with pytest.raises(ConfigFileNotFoundError) as info:
        load_config(write(tmp_path / "run.toml", text))
    message = str(info.value)
    assert "samples.csv sample P1_S1, column he: not found" in message
    assert str(data / "P1_S1" / "he" / "P1_S1_HE.tif") in message
    # an imzML without its .ibd
    (data / "P1_S1" / "msi" / "P1_S1.ibd").unlink()
    (data / "samples.csv").write_text((data / "samples.csv").read_text().replace("P1_S1/he/P1_S1_HE.tif,4", ","))
    with pytest.raises(ConfigFileNotFoundError, match=r"has no \.ibd companion: .*P1_S1\.ibd not found"):
        load_config(tmp_path / "run.toml")


def test_sample_mistakes(tmp_path, sample_data_dir):
    text = example_config(sample_data_dir, explicit_samples=True)
    cases = {
        "he_micron_per_pixel": (("he_microns_per_pixel = 4.0", "he_micron_per_pixel = 4.0"),
                                "[[samples]] #1 (P1_S1) he_micron_per_pixel is not a known key "
                                "(did you mean 'he_microns_per_pixel'?)"),
        "no size": (("msi_pixel_size_um = 50.0\n", ""),
                    "[[samples]] #1 (P1_S1) imzml is given but msi_pixel_size_um is not"),
        "negative size": (("msi_pixel_size_um = 50.0", "msi_pixel_size_um = -50"),
                          "[[samples]] #1 (P1_S1) msi_pixel_size_um must be a positive number, got -50"),
        "duplicate": (('name = "P1_S2"', 'name = "P1_S1"'),
                      '[[samples]] #2 name "P1_S1" is already the name of sample #1'),
        "bad name": (('name = "P1_S2"', 'name = "P1 S2"'), "can only hold letters, digits"),
        "single brackets": (("[[samples]]", "[samples]"), "not valid TOML"),
    }
    for case, ((old, new), expected) in cases.items():
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path / f"{case}.toml", edited(text, old, new)))
        assert expected in str(info.value), (case, str(info.value))


def test_sections_and_modalities_that_do_not_fit_the_data(tmp_path, sample_data_dir, example):
    visium_only = (f'[[samples]]\nname = "A"\nvisium = "{sample_data_dir / "P1_S1" / "outs"}"\n\n'
                   '[model]\nmodalities = ["rna", "msi"]\n')
    with pytest.raises(ConfigError, match=r"\[model\] modalities includes 'msi' but no sample has an imzml file"):
        load_config(write(tmp_path / "a.toml", visium_only))
    # without [model] modalities the model takes what the data has; translations must fit that too
    only = visium_only.replace('modalities = ["rna", "msi"]', "") + '[outputs]\ntranslations = [["msi", "rna"]]\n'
    with pytest.raises(ConfigError, match=r'translations entry \["msi", "rna"\] uses "msi", but no sample has an imzml'):
        load_config(write(tmp_path / "b.toml", only))
    cfg = load_config(write(tmp_path / "c.toml", visium_only.replace('["rna", "msi"]', '["rna"]')))
    assert cfg.samples[0].imzml is None and cfg.modalities == ["rna"]
    with pytest.raises(ConfigError, match=r"epochs is outside any section \(it belongs in \[train\]\)"):
        load_config(write(tmp_path / "d.toml", "epochs = 5\n" + example))
    with pytest.raises(ConfigError, match=r"\[data\] names no samples"):
        load_config(write(tmp_path / "e.toml", "[train]\nepochs = 3\n"))
    with pytest.raises(ConfigError, match=r"samples_csv and \[\[samples\]\] are both given"):
        load_config(write(tmp_path / "f.toml", example + visium_only.split("[model]")[0]))



def test_visium_hd_bin_size_in_samples(tmp_path, sample_data_dir):
    """[[samples]] visium_bin_um: read, checked (a Visium folder has no bins), and written back by to_toml."""
    from spatialmix.simulate.visium_hd import write_visium_hd

    visium = f'[[samples]]\nname = "A"\nvisium = "{sample_data_dir / "P1_S1" / "outs"}"\n'
    with pytest.raises(ConfigError, match=r"line 4.*visium_bin_um.*is a Visium folder without binned_outputs/ "
                       r"\(not Visium HD\).*Leave visium_bin_um empty for Visium"):
        load_config(write(tmp_path / "v.toml", visium + "visium_bin_um = 8\n"))
    hd = write_visium_hd(tmp_path / "hd" / "outs", n_rows=16, n_cols=16, n_genes=10, seed=1)
    base = f'[[samples]]\nname = "A"\nvisium = "{hd}"\n'
    cfg = load_config(write(tmp_path / "a.toml", base + "visium_bin_um = 8\n"))
    assert cfg.samples[0].visium_bin_um == 8.0
    assert "visium_bin_um = 8" in cfg.to_toml()
    assert load_config(write(tmp_path / "b.toml", cfg.to_toml())).samples[0].visium_bin_um == 8.0
    with pytest.raises(ConfigError, match=r"visium_bin_um must be a positive number, got -8"):
        load_config(write(tmp_path / "c.toml", base + "visium_bin_um = -8\n"))

def test_valid_variants(tmp_path, example, sample_data_dir):
    text = edited(example, 'device = "auto"', 'device = "cuda:1"')
    text = edited(text, '["msi+morphology", "rna"]', '[["msi", "morphology"], "rna"]')
    text = edited(text, f'"{sample_data_dir / "samples.csv"}"', f'"{sample_data_dir}"')  # the folder is enough
    cfg = load_config(write(tmp_path / "run.toml", text))
    assert cfg.train["device"] == "cuda:1"
    assert cfg.outputs["translations"][0] == (["msi", "morphology"], "rna")
    assert len(cfg.samples) == 4
