"""``spatialmix benchmark``: every listed model and baseline on one dataset, measured the way the papers do.

:func:`iter_benchmark` opens a dataset (a folder written by ``spatialmix simulate`` or any folder with a
``samples.csv``, prepared here; or a saved project zarr), builds the representations

- ``raw_<modality>`` and ``raw_concat``: the model inputs themselves (references),
- the baselines (:mod:`spatialmix.models.baselines`): ``pca_<modality>``, ``pca_concat``, ``harmony``,
- each model's shared embedding (``mima``), trained with its defaults (MIMA: ``epochs="auto"``, lr 1e-3),

and scores every one of them on the same spots (those with every modality):

- annotation prediction against the pathologist (:mod:`spatialmix.evaluate.annotations`), leave-one-sample-out
  and within-sample 4-fold; predictions, confidences and agreement are written into the project,
- scIB bio-conservation, batch-correction and total scores (scib-metrics' ``Benchmarker``),
- for models that translate: 4-fold cross-validated translation fidelity against the annotation-centroid
  baselines (:mod:`spatialmix.evaluate.translation`),
- for models with a latent per modality: FOSCTTM and label transfer between modalities, as if unpaired,
- for label-supervised domain-adaptation models (MoDAmix, calibration): half of the samples are labelled
  sources, the rest unlabelled targets; the model's own target predictions are scored against the paper's
  ensemble trained on the sources' raw concatenated features (and on every other representation), on the same
  target spots (:func:`_domain_adaptation`),
- for scMODAL: RNA of the source samples against MSI of the target samples, never paired; links from the
  correlation of paired spots of one reference sample; FOSCTTM and label transfer on the truly paired spots of
  the other samples, against Harmony on the PCA of the row-stacked linked features (:func:`_unpaired_alignment`),
- training time and peak memory.

It writes ``metrics.json``, ``metrics.csv``, ``report.md``, the figures and ``project.zarr`` into ``out``.

The package, by purpose: :mod:`~spatialmix.benchmark.inputs` (opening the data, the models it may run),
:mod:`~spatialmix.benchmark.run` (:func:`iter_benchmark`, stage by stage), :mod:`~spatialmix.benchmark.sections`
(domain adaptation, unpaired alignment), :mod:`~spatialmix.benchmark.report` (claims, ranking, tables, report).
"""

from spatialmix.benchmark.inputs import (
    DEFAULT_MODELS, MULTIOMICS_SUFFIXES, SCVI_TOOLS_PEERS, Representation, applicable_peers, default_sources,
)
from spatialmix.benchmark.report import PAPER_CLAIMS, format_benchmark, metrics_table
from spatialmix.benchmark.run import benchmark, iter_benchmark

__all__ = ["DEFAULT_MODELS", "MULTIOMICS_SUFFIXES", "PAPER_CLAIMS", "Representation", "SCVI_TOOLS_PEERS",
           "applicable_peers", "benchmark", "default_sources", "format_benchmark", "iter_benchmark",
           "metrics_table"]
