"""``load_config``: what each section accepts, :class:`RunConfig`, and the checks of one file from its first
line to its last (model and training parameters through their declarations, ``spatialmix.params``).

About 500 lines on purpose: the sections are checked in one order against one parsed file (a later section's
check needs an earlier one's result: the samples decide which modalities ``[model]`` may name, the model
which ``[train]`` defaults apply), so the section checks stay beside ``load_config`` that sequences them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from spatialmix.errors import ConfigError, SpatialMixError
from spatialmix.conventions import ANNOTATION_KEY, MODALITY_TABLES
from spatialmix.io.visium_hd import bin_size_problem
from spatialmix.pipeline import PrepareParams
from spatialmix.samples import SampleSpec, read_samples_csv

from ._checks import (
    ConfigFileNotFoundError, DATA_KEYS, OUTPUT_DEFAULTS, SAMPLE_KEYS, SAMPLE_NAME_RE, SECTIONS, _Context,
    _Key, _apply, _got, _is_number, _label, _suggest, _toml, boolean, existing_file, modality_list,
    output_path, positive, resume, text, tomllib,
)



# ============================================================================================================
# What each section accepts
# ============================================================================================================
def _prepare_checks() -> dict[str, Callable]:
    return declared(PrepareParams, {
        "mz_range": lambda k, v: (float(v[0]), float(v[1])),
        "morphology_encoder": existing_file("encoder checkpoint", fix="Give a TorchScript image encoder (.pt) "
                                            "or leave morphology_encoder out to use the built-in image features")})


def declared(decl, overrides: dict[str, Callable] | None = None) -> dict[str, Callable]:
    """Checks of every parameter of a declaration (``spatialmix.params.Params``: a model's ``Params`` or the
    engine's ``TrainConfig``), each raising a :class:`ConfigError` at the key's line with the declaration's own
    description of the allowed values. ``overrides``: what a configuration file adds to a key (a path relative
    to the file that must exist, ...), applied after the declared check."""

    def check_for(key: str) -> Callable:
        extra = (overrides or {}).get(key)

        def check(k: _Key, v, base: Path):
            out, problems = decl.problems({key: v}, style="toml")
            if problems:
                raise k.fail(problems[0].message, problems[0].fix)
            return _apply(extra, k, v, base) if extra else out[key]
        check.needs_base = True  # type: ignore[attr-defined]
        return check
    return {key: check_for(key) for key in decl.model_fields}


#: what ``[prepare]`` accepts: ``spatialmix.pipeline.PrepareParams`` plus the file checks a configuration adds
PREPARE_CHECKS: dict[str, Callable] = _prepare_checks()


def _train_checks() -> dict[str, Callable]:
    from spatialmix.train import TrainConfig

    return declared(TrainConfig, {"checkpoint_dir": output_path, "resume": resume})


OUTPUT_CHECKS: dict[str, Callable] = {
    "translations": lambda k, v: v,  # checked with the model's modalities, see _check_translations
    "corrected": boolean,
    "rgb": boolean,
    "figures": boolean,
    "metrics": boolean,
}


def _model_checks(name: str) -> dict[str, Callable]:
    """Parameters ``[model]`` accepts for model ``name`` (besides ``name`` and ``modalities``): its declaration."""
    from spatialmix.models import MODELS

    checks = declared(MODELS[name].Params)
    if name == "mima":
        checks["hidden"] = _hidden
    return checks


def _hidden(k: _Key, v):
    if not isinstance(v, dict):
        raise k.fail(f"must be a table {{modality = [sizes]}}, got {_got(v)}",
                     "For example hidden = {rna = [300, 300], msi = []} ([] = project directly to the latents)")
    out = {}
    for m, sizes in v.items():
        if m not in MODALITY_TABLES:
            raise k.fail(f"names an unknown modality {_got(m)}" + _suggest(m, MODALITY_TABLES),
                         f"Modalities are {', '.join(MODALITY_TABLES)}")
        if not isinstance(sizes, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1
                                                  for s in sizes):
            raise k.fail(f"{m} must be a list of layer sizes (whole numbers >= 1), got {_got(sizes)}")
        out[m] = list(sizes)
    return out


# ============================================================================================================
# The configuration
# ============================================================================================================
@dataclass
class RunConfig:
    """A validated run configuration (every path absolute, every referenced file present).

    ``prepare``, ``model_params`` and ``train`` hold only what the file sets (the keyword arguments of
    :func:`spatialmix.pipeline.iter_prepare`, of the model class and of its ``train``); whatever is left out takes
    the code's defaults (the model's paper defaults for training). ``outputs`` is complete (defaults filled in);
    ``outputs["translations"]`` is a list of ``(sources, target)`` with ``sources`` a list of modalities.
    """

    samples: list[SampleSpec]
    annotation_key: str = ANNOTATION_KEY
    prepare: dict[str, Any] = field(default_factory=dict)
    model: str = "mima"
    model_params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=lambda: dict(OUTPUT_DEFAULTS))
    path: Path | None = None
    #: the samples.csv the samples came from (None when listed as [[samples]])
    samples_csv: Path | None = None

    @property
    def modalities(self) -> list[str] | None:
        """The modalities the model integrates (None: every modality the data has)."""
        mods = self.model_params.get("modalities")
        return list(mods) if mods is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, laid out like the file (paths absolute), for provenance (``uns['spatialmix']``)."""
        def plain(v):
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, (list, tuple)):
                return [plain(x) for x in v]
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        samples = []
        for s in self.samples:
            entry = {"name": s.sample, "patient": s.patient}
            for key in SAMPLE_KEYS[2:]:
                value = getattr(s, key)
                if value is not None:
                    entry[key] = plain(value)
            samples.append(entry)
        data = {"annotation_key": self.annotation_key}
        if self.samples_csv is not None:
            data = {"samples_csv": str(self.samples_csv), **data}
        outputs = dict(self.outputs)
        outputs["translations"] = [["+".join(src), tgt] for src, tgt in outputs.get("translations", [])]
        return {
            "config": str(self.path) if self.path else None,
            "data": data,
            "samples": samples,
            "prepare": plain(self.prepare),
            "model": {"name": self.model, **plain(self.model_params)},
            "train": plain(self.train),
            "outputs": plain(outputs),
        }

    def to_toml(self) -> str:
        """This configuration as a TOML file (samples listed as [[samples]], every path absolute)."""
        d = self.to_dict()
        d["data"].pop("samples_csv", None)
        lines = [f"# napari-spatialmix run configuration (resolved from {d['config']})" if d["config"] else
                 "# napari-spatialmix run configuration", ""]
        lines += _table("data", d["data"])
        for s in d["samples"]:
            lines += ["[[samples]]"] + [f"{k} = {_toml(v)}" for k, v in s.items()] + [""]
        for section in ("prepare", "model", "train", "outputs"):
            lines += _table(section, d[section])
        return "\n".join(lines)


def _table(name: str, values: dict) -> list[str]:
    plain = {k: v for k, v in values.items() if not isinstance(v, dict)}
    sub = {k: v for k, v in values.items() if isinstance(v, dict)}
    out = [f"[{name}]"] + [f"{k} = {_toml(v)}" for k, v in plain.items()] + [""]
    for k, v in sub.items():
        out += [f"[{name}.{k}]"] + [f"{kk} = {_toml(vv)}" for kk, vv in v.items()] + [""]
    return out


# ============================================================================================================
# load_config
# ============================================================================================================
def _read(path: Path) -> tuple[dict, str]:
    if not path.exists():
        raise ConfigFileNotFoundError("run configuration not found", path,
                                      fix="Give the path of a .toml file; `spatialmix.config.example_config(DATA_DIR)` "
                                      "writes one for a dataset folder (see docs/config.md)")
    if path.is_dir():
        raise ConfigError("a run configuration must be a .toml file, not a folder", path)
    raw = path.read_bytes()
    try:
        content = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path.name} is not UTF-8 text (byte {err.start} cannot be decoded)", path,
                          fix="Save the configuration as UTF-8 text") from None
    try:
        data = tomllib.loads(content)
    except tomllib.TOMLDecodeError as err:
        msg = str(err)
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = f"{path.name}"
        shown = ""
        if m:
            line, col = int(m.group(1)), int(m.group(2))
            where += f" line {line}, column {col}"
            lines = content.splitlines()
            if 1 <= line <= len(lines):
                shown = f"; the line reads: {lines[line - 1].strip()!r}"
            msg = msg[: m.start()].rstrip()
        raise ConfigError(f"{where}: not valid TOML: {msg}{shown}", path,
                          fix="Fix the syntax there: key = value, strings in double quotes, lists in [ ], "
                          "section headers like [train]") from None
    return data, content


def _check_keys(ctx: _Context, table: dict, section: str, allowed, *, index: int | None = None,
                name: str | None = None) -> None:
    allowed = list(allowed)
    for key in table:
        if key in allowed:
            continue
        hint = _suggest(key, allowed)
        if not hint:
            for other, keys in _section_keys().items():
                if other != section and key in keys:
                    hint = f" (it belongs in {'[[samples]]' if other == 'samples' else f'[{other}]'})"
                    break
        where = _label(section, key, index, name)
        raise ctx.error(where, f"is not a known key{hint}",
                        f"Allowed keys in {_label(section, None, index).split(' #')[0]}: {', '.join(allowed)}",
                        table=section, key=key, index=index)


def _section_keys() -> dict[str, tuple]:
    from spatialmix.models import MODELS

    model_keys = {k for cls in MODELS.values() for k in cls.defaults}
    return {"data": DATA_KEYS, "samples": SAMPLE_KEYS, "prepare": tuple(PREPARE_CHECKS),
            "model": ("name", "modalities", "hidden", *sorted(model_keys)), "train": tuple(_train_checks()),
            "outputs": tuple(OUTPUT_CHECKS)}


def _section(ctx: _Context, doc: dict, name: str) -> dict:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        header = f"[{name}]"
        raise ctx.error(header, f"must be a section (a {header} header followed by key = value lines), "
                        f"got {_got(value)}", table="", key=name)
    return value


def _check_section(ctx: _Context, table: dict, section: str, checks: dict[str, Callable], base: Path) -> dict:
    _check_keys(ctx, table, section, checks)
    return {key: _apply(checks[key], _Key(ctx, section, key), value, base) for key, value in table.items()}


def _samples_from_toml(ctx: _Context, entries, base: Path) -> list[SampleSpec]:
    if isinstance(entries, dict):
        raise ctx.error("[[samples]]", "must be written with double brackets, one [[samples]] header per sample",
                        "Write each sample as its own [[samples]] table (name = ..., visium = ...)",
                        table="", key=None)
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ctx.error("[[samples]]", f"must be one or more tables, got {_got(entries)}",
                        "Write each sample as its own [[samples]] table (name = ..., visium = ...)")
    specs, seen = [], {}
    paths = {"visium": existing_file("Space Ranger folder", folder=True,
                                     fix="Give the Space Ranger outs/ folder (or the run folder holding it), "
                                     "relative to the folder of the configuration file"),
             "imzml": existing_file("imzML file"), "he": existing_file("H&E image"),
             "annotations": existing_file("annotation file")}
    for i, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry.get("name"), str) else None
        _check_keys(ctx, entry, "samples", SAMPLE_KEYS, index=i, name=name)
        for required in ("name", "visium"):
            if required not in entry:
                raise ctx.error(_label("samples", None, i, name), f"has no {required}",
                                "Each sample needs at least name and visium (its Space Ranger outs/ folder)",
                                table="samples", index=i)
        k = _Key(ctx, "samples", "name", i)
        name = text(k, entry["name"])
        if not SAMPLE_NAME_RE.match(name):
            raise k.fail(f"{_got(name)} can only hold letters, digits, '_', '.' and '-' (it names SpatialData "
                         "elements and coordinate systems)")
        if name in seen:
            raise k.fail(f"{_got(name)} is already the name of sample #{seen[name] + 1}", "Sample names must be unique")
        seen[name] = i
        values: dict[str, Any] = {"sample": name}
        if "patient" in entry:
            values["patient"] = text(_Key(ctx, "samples", "patient", i, name), entry["patient"])
        for key in ("visium", "imzml", "he", "annotations"):
            if key in entry:
                values[key] = paths[key](_Key(ctx, "samples", key, i, name), entry[key], base)
        for key in ("msi_pixel_size_um", "he_microns_per_pixel", "visium_bin_um"):
            if key in entry:
                values[key] = positive(_Key(ctx, "samples", key, i, name), entry[key])
        for file_key, size_key, example in (("imzml", "msi_pixel_size_um", "50"), ("he", "he_microns_per_pixel", "0.5")):
            if file_key in values and size_key not in values:
                raise ctx.error(_label("samples", file_key, i, name), f"is given but {size_key} is not",
                                f"Add {size_key} = {example} (the size in micrometres; the files' own metadata "
                                "is often wrong)", table="samples", key=file_key, index=i)
        if "imzml" in values:
            _check_ibd(_Key(ctx, "samples", "imzml", i, name), values["imzml"])
        if "visium_bin_um" in values and (problem := bin_size_problem(values["visium"], values["visium_bin_um"])):
            raise _Key(ctx, "samples", "visium_bin_um", i, name).fail(
                f"= {values['visium_bin_um']:g}: {problem[0]}", problem[1])
        specs.append(SampleSpec(**values))
    return specs


def _check_ibd(k: _Key, imzml: Path) -> None:
    if imzml.suffix.lower() != ".imzml":
        raise k.fail(f"must be an .imzML file, got {imzml.name}", "Give the .imzML file; its .ibd must lie next to it")
    if not any(c.stem == imzml.stem and c.suffix.lower() == ".ibd" and c.is_file() for c in imzml.parent.iterdir()):
        raise k.fail(f"has no .ibd companion: {imzml.with_suffix('.ibd')} not found",
                     "Copy the .ibd file (same name, .ibd) next to the .imzML file", missing=True)


def _samples_from_csv(ctx: _Context, value, base: Path) -> tuple[list[SampleSpec], Path]:
    k = _Key(ctx, "data", "samples_csv")
    csv_path = existing_file("samples.csv", fix="Give the dataset's samples.csv (or its folder), relative to the "
                             "folder of the configuration file")
    if isinstance(value, str) and (base / value).expanduser().is_dir():
        value = str(Path(value) / "samples.csv")
    csv = csv_path(k, value, base)
    try:
        specs = read_samples_csv(csv, check_files=False)  # the files are checked below, with the config's context
    except (SpatialMixError, ValueError, OSError) as err:
        raise k.fail(f"cannot be read: {err}", "Columns are sample, patient, visium, imzml, msi_pixel_size_um, he, "
                     "he_microns_per_pixel, annotations (paths relative to the csv)") from None
    for spec in specs:
        where = _Key(ctx, "data", "samples_csv")
        where_label = f"{csv.name} sample {spec.sample},"
        if not SAMPLE_NAME_RE.match(spec.sample):
            raise where.fail(f"{where_label} name {_got(spec.sample)} can only hold letters, digits, '_', '.' and '-'")
        checks = (("visium", spec.visium, True), ("imzml", spec.imzml, False), ("he", spec.he, False),
                  ("annotations", spec.annotations, False))
        for column, path, folder in checks:
            if path is None:
                continue
            if not path.exists():
                raise where.fail(f"{where_label} column {column}: not found: {path.resolve()}",
                                 f"Paths in {csv.name} are relative to its folder ({csv.parent})", missing=True)
            if folder != path.is_dir():
                raise where.fail(f"{where_label} column {column}: {path.resolve()} must be a "
                                 f"{'folder' if folder else 'file'}")
        for column in ("msi_pixel_size_um", "he_microns_per_pixel", "visium_bin_um"):
            v = getattr(spec, column)
            if v is not None and not (_is_number(v) and v > 0):
                raise where.fail(f"{where_label} column {column} must be a positive number, got {v!r}")
        if spec.visium_bin_um is not None and (problem := bin_size_problem(spec.visium, spec.visium_bin_um)):
            raise where.fail(f"{where_label} column visium_bin_um: {problem[0]}", problem[1])
        if spec.imzml is not None:
            _check_ibd(_Key(ctx, "data", f"samples_csv, {csv.name} sample {spec.sample}, column imzml"), spec.imzml)
        for key in ("visium", "imzml", "he", "annotations"):
            if getattr(spec, key) is not None:
                setattr(spec, key, getattr(spec, key).resolve())
    return specs, csv


def _absent_modalities(samples: list[SampleSpec], prepare: dict) -> dict[str, str]:
    """Modalities the run cannot have, with the reason."""
    out = {}
    if not any(s.imzml is not None for s in samples):
        out["msi"] = "no sample has an imzml file"
    if not any(s.he is not None for s in samples):
        out["morphology"] = "no sample has an H&E image (he)"
    elif prepare.get("morphology", True) is False:
        out["morphology"] = "[prepare] morphology is false"
    return out


def _check_translations(ctx: _Context, value, modalities: list[str], model_set: bool, absent: dict[str, str]) -> list:
    k = _Key(ctx, "outputs", "translations")
    fix = ('Write a list of [sources, target] pairs, e.g. translations = [["msi+morphology", "rna"]] '
           "(sources joined by '+', or a list)")
    if not isinstance(value, list):
        raise k.fail(f"must be a list of [sources, target] pairs, got {_got(value)}", fix)
    out = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)
                and isinstance(pair[0], (str, list))):
            raise k.fail(f"entry {_got(pair)} is not a [sources, target] pair", fix)
        src = pair[0].split("+") if isinstance(pair[0], str) else pair[0]
        src = [s.strip() if isinstance(s, str) else s for s in src]
        target = pair[1].strip()
        for m in [*src, target]:
            if m not in modalities:
                if model_set and m in MODALITY_TABLES:
                    raise k.fail(f"entry {_got(pair)} uses {_got(m)}, which [model] modalities leaves out "
                                 f"({', '.join(modalities)})", "Add it to [model] modalities or drop this translation")
                if m in absent:
                    raise k.fail(f"entry {_got(pair)} uses {_got(m)}, but {absent[m]}", "Drop this translation")
                raise k.fail(f"entry {_got(pair)} names an unknown modality {_got(m)}"
                             + (_suggest(m, MODALITY_TABLES) if isinstance(m, str) else ""),
                             f"Modalities are {', '.join(MODALITY_TABLES)}")
        if target in src:
            raise k.fail(f"entry {_got(pair)} translates {target!r} into itself", "The target must not be a source")
        if len(set(src)) != len(src):
            raise k.fail(f"entry {_got(pair)} lists a source twice")
        out.append((src, target))
    return out


def load_config(path: str | Path) -> RunConfig:
    """Read and check a run configuration (see ``docs/config.md``).

    Raises
    ------
    ConfigError
        On a TOML syntax error (with line and column), an unknown section or key (with the allowed ones and the
        nearest match), a value of the wrong type or out of range, an unknown device or model, or a referenced
        file that does not exist (then also :class:`ConfigFileNotFoundError`, a ``FileNotFoundError``).
    """
    from spatialmix.models import MODELS
    from spatialmix.train import TrainConfig

    path = Path(path).expanduser().resolve()
    doc, content = _read(path)
    ctx = _Context(path, content)
    base = path.parent

    for key, value in doc.items():
        if key in SECTIONS:
            continue
        if not isinstance(value, (dict, list)) or (isinstance(value, list) and not all(isinstance(v, dict) for v in value)):
            home = next((f"[{s}]" for s, keys in _section_keys().items() if key in keys and s != "samples"), None)
            hint = f" (it belongs in {home})" if home else _suggest(key, SECTIONS)
            raise ctx.error(f"{key}", f"is outside any section{hint}",
                            "Put every key under its section header: " + ", ".join(
                                "[[samples]]" if s == "samples" else f"[{s}]" for s in SECTIONS),
                            table="", key=key)
        raise ctx.error(f"[{key}]", f"is not a known section{_suggest(key, SECTIONS)}",
                        "Sections are " + ", ".join("[[samples]]" if s == "samples" else f"[{s}]" for s in SECTIONS),
                        table=key, key=None)

    # -- [data] and the samples ---------------------------------------------------------------------------
    data = _section(ctx, doc, "data")
    _check_keys(ctx, data, "data", DATA_KEYS)
    annotation_key = text(_Key(ctx, "data", "annotation_key"), data.get("annotation_key", ANNOTATION_KEY))
    samples_csv = None
    if "samples_csv" in data and "samples" in doc:
        raise ctx.error("[data] samples_csv", "and [[samples]] are both given",
                        "List the samples one way: either samples_csv or [[samples]] tables",
                        table="data", key="samples_csv")
    if "samples_csv" in data:
        samples, samples_csv = _samples_from_csv(ctx, data["samples_csv"], base)
    elif "samples" in doc:
        samples = _samples_from_toml(ctx, doc["samples"], base)
    else:
        raise ctx.error("[data]", "names no samples",
                        "Add samples_csv = \"path/to/samples.csv\" under [data], or one [[samples]] table per sample "
                        "(name, visium, imzml, msi_pixel_size_um, he, he_microns_per_pixel, annotations)",
                        table="data")

    # -- [prepare] ---------------------------------------------------------------------------------------
    prepare = _check_section(ctx, _section(ctx, doc, "prepare"), "prepare", PREPARE_CHECKS, base)

    # -- [model] -----------------------------------------------------------------------------------------
    model_table = _section(ctx, doc, "model")
    k = _Key(ctx, "model", "name")
    name = model_table.get("name", "mima")
    if not isinstance(name, str) or name not in MODELS:
        raise k.fail(f"is not a known model: {_got(name)}" + (_suggest(name, MODELS) if isinstance(name, str) else ""),
                     f"Models are {', '.join(sorted(MODELS))}")
    checks = {"name": lambda k_, v: v, "modalities": modality_list, **_model_checks(name)}
    model_params = _check_section(ctx, model_table, "model", checks, base)
    model_params.pop("name", None)
    absent = _absent_modalities(samples, prepare)
    model_set = "modalities" in model_params
    modalities = model_params["modalities"] if model_set else [m for m in MODALITY_TABLES if m not in absent]
    for m in modalities:
        if m in absent:
            raise _Key(ctx, "model", "modalities").fail(f"includes {m!r} but {absent[m]}",
                                                        f"Drop {m!r} from modalities or give the files")
    extra = sorted(set(model_params.get("hidden", {})) - set(modalities))
    if extra:
        raise _Key(ctx, "model", "hidden").fail(
            f"names {extra}, which the model does not integrate ({', '.join(modalities)})"
            + ("" if model_set else f": {'; '.join(absent[m] for m in extra if m in absent)}"))

    # -- [train] -----------------------------------------------------------------------------------------
    train = _check_section(ctx, _section(ctx, doc, "train"), "train", _train_checks(), base)
    if train.get("resume") is True and "checkpoint_dir" not in train:
        raise _Key(ctx, "train", "resume").fail("= true needs checkpoint_dir (the folder holding last.ckpt)",
                                                "Add checkpoint_dir, or give the checkpoint's path as resume")
    try:  # the engine's own cross-field checks (checkpoint_every needs checkpoint_dir, ...)
        TrainConfig.build(MODELS[name].train_defaults, {k_: (str(v) if isinstance(v, Path) else v)
                                                        for k_, v in train.items()})
    except SpatialMixError as err:
        raise ctx.error("[train]", f"is not a valid training setup: {err}", table="train") from None

    # -- [outputs] ---------------------------------------------------------------------------------------
    outputs = _check_section(ctx, _section(ctx, doc, "outputs"), "outputs", OUTPUT_CHECKS, base)
    outputs = {**OUTPUT_DEFAULTS, **outputs}
    outputs["translations"] = _check_translations(ctx, outputs["translations"], modalities, model_set, absent)

    return RunConfig(samples=samples, annotation_key=annotation_key, prepare=prepare, model=name,
                     model_params=model_params, train=train, outputs=outputs, path=path, samples_csv=samples_csv)


