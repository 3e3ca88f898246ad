"""Parameters declared once (pydantic v2): type, default, range and meaning of every model's and the training
engine's options, and everything derived from those declarations.

Each model declares ``class Params(spatialmix.params.Params)`` (``spatialmix.models.mima.MIMAParams``, ...) and
the training engine :class:`spatialmix.train.TrainConfig` is one. From a declaration come:

- the check of the Python API (``MIMA(data, n_latent=0)`` -> :class:`~spatialmix.errors.ParameterError`
  ``MIMA parameter n_latent must be a whole number >= 1, got 0``), through :meth:`Params.check`;
- the check of a TOML run configuration: :func:`spatialmix.config.load_config` turns each
  :class:`Problem` into a :class:`~spatialmix.errors.ConfigError` naming the file, line, section and key;
- the form rows of the napari Integrate dock (ranges, choices and tooltips: :func:`field_info`);
- the parameter tables of ``docs/config.md`` (:func:`markdown_table`; ``tests/test_params.py`` fails when the
  document and the declarations disagree; ``make docs-config`` rewrites them).

Only what a value alone can tell is declared here; checks that need the data (a sample name that must exist,
a modality the data must have) stay in the models' constructors.

Why not pydantic's own messages: they name pydantic's types ("Input should be a valid integer"); ours are
written from the same declaration in the words of the rest of the package ("a whole number >= 1").
"""

from __future__ import annotations

import json
import math
import re
import types
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types as at
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo as FieldInfo_

from spatialmix.errors import ParameterError

__all__ = ["Params", "Problem", "param", "describe", "show", "markdown_table", "field_info", "ParamInfo", "toml_value",
           "render_docs"]


def param(default: Any = None, doc: str = "", *, kind: str | None = None, default_text: str | None = None,
          fix: str | None = None, **constraints) -> Any:
    """One declared parameter: its default, its meaning (``doc``, the docs' and tooltips' text) and its range
    (pydantic's ``ge`` / ``gt`` / ``le`` / ``lt`` / ``min_length`` / ``max_length``). ``kind``: how the allowed
    values are described when the type alone does not say it (a custom check); ``default_text``: how the
    default is shown in the docs when it is derived (e.g. "`beta`"); ``fix``: the advice an error ends with."""
    extra = {k: v for k, v in (("kind", kind), ("default_text", default_text), ("fix", fix)) if v is not None}
    return Field(default, description=doc, json_schema_extra=extra or None, **constraints)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML value (str, bool, int, float, Path, list/tuple, dict as inline table): in
    messages, the docs tables, ``example_config`` and ``RunConfig.to_toml``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PurePath):
        value = value.as_posix()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(str(value))


def toml_key(key: str) -> str:
    """A key of an inline table, quoted only when TOML needs it."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def show(value: Any, style: str = "python") -> str:
    """How a wrong value is quoted in a message: as Python (``repr``) or as written in a TOML file. (Styles of
    :func:`describe`: ``"python"``, ``"toml"`` and ``"cli"``, Python's without "or None".)"""
    text = toml_value(value) if style == "toml" else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _bounds(metadata) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for m in metadata:
        if isinstance(m, FieldInfo_):  # Annotated[int, Field(ge=1)]: the bounds are in the field's metadata
            out.update(_bounds(m.metadata))
            continue
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length"):
            if getattr(m, name, None) is not None:
                out[name] = getattr(m, name)
        if isinstance(m, at.Len):
            out["min_length"], out["max_length"] = m.min_length, m.max_length
    return out


def _num(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _range(b: dict) -> str:
    low = ("ge", b["ge"]) if "ge" in b else ("gt", b["gt"]) if "gt" in b else None
    high = ("le", b["le"]) if "le" in b else ("lt", b["lt"]) if "lt" in b else None
    if low and high:
        return (f" in {'[' if low[0] == 'ge' else '('}{_num(low[1])}, {_num(high[1])}"
                f"{']' if high[0] == 'le' else ')'}")
    if low:
        return f" {'>=' if low[0] == 'ge' else '>'} {_num(low[1])}"
    if high:
        return f" {'<=' if high[0] == 'le' else '<'} {_num(high[1])}"
    return ""


def _describe(ann, metadata, style: str) -> str:
    origin = get_origin(ann)
    if origin is Annotated:
        base, *meta = get_args(ann)
        return _describe(base, [*metadata, *meta], style)
    if origin in (Union, types.UnionType):
        parts = [a for a in get_args(ann) if a is not type(None)]
        texts = [_describe(a, metadata if len(parts) == 1 else [], style) for a in parts]
        # a Literal alternative reads last ("a whole number >= 1 or 'auto'")
        texts = sorted(texts, key=lambda t: t.startswith(("'", '"')))
        if len(parts) < len(get_args(ann)) and style == "python":  # "cli": a flag left out is None
            texts.append("None")
        return " or ".join(texts)
    if origin is Literal:
        q = (lambda v: json.dumps(v)) if style == "toml" else repr
        choices = [q(v) for v in get_args(ann)]
        return " or ".join(choices) if len(choices) <= 2 else "one of " + ", ".join(choices)
    b = _bounds(metadata)
    if ann is bool:
        return "true or false (no quotes)" if style == "toml" else "True or False"
    if ann is int:
        return "a whole number" + _range(b)
    if ann is float:
        r = _range(b)
        return "a positive number" if r == " > 0" else "a number" + r
    if ann is str:
        return ("a non-empty string" if b.get("min_length") else "a string") + (" in quotes" if style == "toml" else "")
    if origin in (list, tuple):
        (item,) = get_args(ann)[:1] or (Any,)
        n = ""
        if b.get("min_length") is not None and b.get("min_length") == b.get("max_length"):
            n = f"{b['min_length']} "
        inner = _describe(item, [], style)
        inner = re.sub(r"^an? ", "", inner).replace("number", "numbers", 1).replace("string", "strings", 1)
        return f"a list of {n}{inner}"
    return getattr(ann, "__name__", str(ann))


class Params(BaseModel):
    """Base of every declaration: unknown keys refused, no silent conversion (``"5"`` is not 5, ``True`` is
    not 1), no NaN / infinity; numpy scalars and tuples are accepted as the Python values they hold."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, validate_default=False)

    @model_validator(mode="before")
    @classmethod
    def _plain_python(cls, values):
        if isinstance(values, dict):
            return {k: _plain(v) for k, v in values.items()}
        return values

    # -- what the declaration says ----------------------------------------------------------------------
    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{name: default}`` of every declared parameter (a fresh copy: lists may be changed)."""
        return {name: _copy(f.get_default(call_default_factory=True)) for name, f in cls.model_fields.items()}

    @classmethod
    def doc(cls, name: str) -> str:
        return cls.model_fields[name].description or ""

    @classmethod
    def describe(cls, name: str, style: str = "python") -> str:
        """The values ``name`` accepts, in words ("a number in [0, 1)")."""
        return describe(cls, name, style)

    # -- checking ---------------------------------------------------------------------------------------
    @classmethod
    def problems(cls, values: dict[str, Any], style: str = "python") -> tuple[dict[str, Any], list["Problem"]]:
        """Check ``values`` (unknown keys are the caller's: they are reported as "is not a known key").
        Returns the checked values (numbers as declared, e.g. 10 -> 10.0 for a float) and the problems, one
        per wrong key, in the order of ``values``."""
        try:
            checked = cls.model_validate(values)
        except ValidationError as err:
            return {}, _problems(cls, values, err, style)
        return {k: getattr(checked, k) for k in values}, []

    @classmethod
    def check(cls, values: dict[str, Any], *, owner: str) -> dict[str, Any]:
        """:meth:`problems` for the Python API: the first problem raised as a :class:`ParameterError`
        (``"<owner> <key> must be ..., got ..."``); else the checked values."""
        out, probs = cls.problems(values)
        if probs:
            p = probs[0]
            raise ParameterError(f"{owner} {p.key} {p.message}" + (f". {p.fix}" if p.fix else ""))
        return out


@dataclass
class Problem:
    """One wrong key: ``message`` reads after the key ("must be a whole number >= 1, got 0")."""

    key: str
    message: str
    fix: str | None = None


def describe(cls: type[Params], name: str, style: str = "python") -> str:
    f = cls.model_fields[name]
    extra = f.json_schema_extra or {}
    if isinstance(extra, dict) and extra.get("kind"):
        return str(extra["kind"])
    return _describe(f.annotation, f.metadata, style)


def _problems(cls: type[Params], values: dict, err: ValidationError, style: str) -> list[Problem]:
    by_key: dict[str, list[dict]] = {}
    for e in err.errors():
        if e["loc"]:
            by_key.setdefault(str(e["loc"][0]), []).append(e)
    out = []
    for key in values:
        errs = by_key.get(key)
        if not errs:
            continue
        if any(e["type"] == "extra_forbidden" for e in errs):
            out.append(Problem(key, "is not a known key"))
            continue
        f = cls.model_fields[key]
        extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
        custom = [e for e in errs if e["type"] == "value_error"]
        if custom:  # a check the declaration adds (its message says what is allowed)
            msg = str(custom[0]["ctx"]["error"])
            out.append(Problem(key, f"{msg}, got {show(values[key], style)}", extra.get("fix")))
            continue
        v = values[key]
        what = describe(cls, key, style)
        if not isinstance(v, str) and not (extra.get("kind")):  # a number given: the number's rule is the one
            alts = [a for a in get_args(f.annotation) if get_origin(a) is not Literal and a is not type(None)]
            if get_origin(f.annotation) in (Union, types.UnionType) and len(alts) == 1:
                what = _describe(alts[0], f.metadata, style)
        if isinstance(v, float) and not math.isfinite(v) and what.startswith("a "):
            what = "a finite " + what[2:].replace("positive number", "number > 0")
        out.append(Problem(key, f"must be {what}, got {show(v, style)}", extra.get("fix")))
    return out


def _plain(v):
    """numpy scalars -> Python scalars, tuples -> lists (strict mode takes neither as the declared type)."""
    try:
        import numpy as np
    except ModuleNotFoundError:  # pragma: no cover - numpy is a dependency
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _copy(v):
    return list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v


# ============================================================================================================
# Derived: form rows, documentation
# ============================================================================================================
@dataclass
class ParamInfo:
    """What a form row needs to know about a parameter."""

    name: str
    default: Any
    doc: str
    kind: str                      # "bool", "int", "float", "choice", "int_list", "text"
    choices: tuple = ()
    low: float | None = None
    high: float | None = None
    high_open: bool = False        # the upper bound itself is not allowed ([0, 1))
    low_open: bool = False         # the lower bound itself is not allowed ((0, 1])


def field_info(cls: type[Params], name: str) -> ParamInfo:
    """Widget-ready facts of one declared parameter: kind, choices and the closed range of its values."""
    f = cls.model_fields[name]
    default = f.get_default(call_default_factory=True)
    ann, meta = f.annotation, list(f.metadata)
    while get_origin(ann) is Annotated:
        ann, *m = get_args(ann)
        meta += m
    if get_origin(ann) in (Union, types.UnionType):
        parts = [a for a in get_args(ann) if a is not type(None)]
        ann = parts[0] if len(parts) == 1 else type(default) if default is not None else parts[0]
        while get_origin(ann) is Annotated:
            ann, *m = get_args(ann)
            meta += m
    b = _bounds(meta)
    low = b.get("ge", b.get("gt"))
    high = b.get("le", b.get("lt"))
    doc = f.description or ""
    if get_origin(ann) is Literal:
        return ParamInfo(name, default, doc, "choice", tuple(get_args(ann)))
    if ann is bool:
        return ParamInfo(name, default, doc, "bool")
    if ann is int:
        return ParamInfo(name, default, doc, "int", (), low, high)
    if ann is float:
        return ParamInfo(name, default, doc, "float", (), low, high, "lt" in b, "gt" in b)
    if get_origin(ann) in (list, tuple) and get_args(ann)[:1] == (int,):
        return ParamInfo(name, default, doc, "int_list")
    return ParamInfo(name, default, doc, "text")


def _default_text(cls: type[Params], name: str) -> str:
    f = cls.model_fields[name]
    extra = f.json_schema_extra if isinstance(f.json_schema_extra, dict) else {}
    if extra.get("default_text"):
        return str(extra["default_text"])
    d = f.get_default(call_default_factory=True)
    return "-" if d is None else f"`{toml_value(d)}`"


def markdown_table(cls: type[Params], *, skip: tuple[str, ...] = ()) -> str:
    """The ``| key | type | default | meaning |`` table of ``docs/config.md`` for one declaration."""
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for name in cls.model_fields:
        if name in skip:
            continue
        f = cls.model_fields[name]
        custom = isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("kind")
        kind = describe(cls, name, "toml")
        kind = re.sub(r"^an? ", "", kind)  # "a whole number >= 1" -> "whole number >= 1", as the docs write
        if not custom:  # "heads" -> `"heads"`
            kind = kind.replace(" (no quotes)", "").replace(" in quotes", "")
            kind = re.sub(r'("[^"]*")', r"`\1`", kind).replace("true or false", "bool")
        rows.append(f"| `{name}` | {kind} | {_default_text(cls, name)} | {cls.doc(name)} |")
    return "\n".join(rows)


_MARK = re.compile(r"(<!-- params:(?P<key>[\w.]+) -->\n)(?P<body>.*?)(\n<!-- /params -->)", re.S)


def render_docs(text: str, declarations: dict[str, type[Params]]) -> str:
    """``text`` with every ``<!-- params:KEY -->`` ... ``<!-- /params -->`` block replaced by the table generated
    from ``declarations[KEY]`` (``spatialmix.config.write_param_docs`` does it for ``docs/config.md``)."""

    def sub(m):
        key = m.group("key")
        if key not in declarations:
            raise ParameterError(f"docs marker params:{key} names no declaration (known: {sorted(declarations)})")
        return m.group(1) + markdown_table(declarations[key]) + m.group(4)
    return _MARK.sub(sub, text)
