"""The TOML run configuration of ``spatialmix run CONFIG.toml --out DIR``, validated with clear errors.

>>> cfg = load_config("run.toml")          # RunConfig: samples, prepare options, model, training, outputs
>>> cfg.samples[0].visium                  # absolute paths, every referenced file checked to exist
>>> cfg.to_dict()                          # JSON-ready, for provenance
>>> print(example_config("sample_data"))   # a commented configuration for a dataset folder

The file has six sections (``docs/config.md`` documents every key)::

    [data]          samples_csv, annotation_key
    [[samples]]     one table per sample (instead of samples_csv): name, patient, visium, imzml,
                    msi_pixel_size_um, he, he_microns_per_pixel, annotations
    [prepare]       options of spatialmix.pipeline.iter_prepare (register, bin_ppm, ...)
    [model]         name (a key of spatialmix.models.MODELS), modalities, and the model's parameters
    [train]         fields of spatialmix.train.TrainConfig (epochs, lr, batch_size, device, seed, ...)
    [outputs]       translations, corrected, rgb, figures, metrics

Relative paths are relative to the folder of the configuration file (paths in a ``samples.csv`` are relative to
the csv's folder). Every mistake raises :class:`~spatialmix.errors.ConfigError` naming the file, the line where it
can be found, the section and key, what is wrong and what is allowed.

A package by purpose (issue 18; it was one 923-line module): ``_checks`` (TOML values as text, errors that name
the file and line, the value checks of undeclared keys), ``_load`` (what each section accepts, ``RunConfig``,
``load_config``; model and training parameters are checked by their declarations, ``spatialmix.params``),
``_example`` (``example_config``, ``docs/config.md``'s generated parameter tables).
"""

from ._checks import (SAMPLE_KEYS, SECTIONS, ConfigFileNotFoundError, _Context, _Key,  # noqa: F401
                      _toml)
from ._example import documented_params, example_config, write_param_docs  # noqa: F401
from ._load import (PREPARE_CHECKS, RunConfig, _model_checks, _section_keys, declared,  # noqa: F401
                    load_config)

__all__ = ["RunConfig", "load_config", "example_config", "ConfigFileNotFoundError", "SECTIONS", "write_param_docs"]
