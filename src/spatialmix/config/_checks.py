"""The run configuration's building blocks: TOML values as text, errors that name the file, line, section and
key (:class:`_Context`, :class:`_Key`), and the value checks of the keys that are not declared parameters
(sample paths, ``[prepare]`` options, ...).
"""

from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any, Callable

from spatialmix.errors import ConfigError, MissingFileError
from spatialmix.params import show
from spatialmix.params import toml_value as _toml  # noqa: F401 - used by ._load, ._example
from spatialmix.conventions import MODALITY_TABLES

try:  # Python >= 3.11
    import tomllib  # noqa: F401 (used by ._load)
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with tomli installed
    import tomli as tomllib  # type: ignore[no-redef]  # noqa: F401



class ConfigFileNotFoundError(ConfigError, MissingFileError):
    """The configuration file, or a file it references, does not exist (also a ``FileNotFoundError``)."""


#: top-level sections, in the order they are documented and written
SECTIONS = ("data", "samples", "prepare", "model", "train", "outputs")
SAMPLE_KEYS = ("name", "patient", "visium", "imzml", "msi_pixel_size_um", "he", "he_microns_per_pixel", "annotations",
               "visium_bin_um")
DATA_KEYS = ("samples_csv", "annotation_key")
OUTPUT_DEFAULTS: dict[str, Any] = {"translations": [], "corrected": True, "rgb": True, "figures": True,
                                   "metrics": True}
SAMPLE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ============================================================================================================
# TOML values as text (for messages, example_config and RunConfig.to_toml)
# ============================================================================================================
def _got(value: Any) -> str:
    """How a wrong value is shown in a message: as it would be written in the file."""
    return show(value, "toml")


# ============================================================================================================
# Errors with the file, line, section and key
# ============================================================================================================
_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\[\]]+?)\s*\]\]?\s*(#.*)?$")


def _norm_table(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))


def _locate(lines: list[str], table: str, key: str | None, index: int | None = None) -> int | None:
    """Best-effort 1-based line of ``key`` in ``table`` (``""`` = top level; ``index``: which ``[[table]]``)."""
    current, count, counts = "", None, {}
    key_re = re.compile(r"^\s*[\"']?" + re.escape(key) + r"[\"']?\s*=") if key else None
    for no, line in enumerate(lines, start=1):
        m = _HEADER_RE.match(line)
        if m and not line.lstrip().startswith("#"):
            current = _norm_table(m.group(2))
            if m.group(1) == "[[":
                counts[current] = counts.get(current, -1) + 1
                count = counts[current]
            else:
                count = None
            if key is None and current == table and (index is None or count == index):
                return no
            continue
        if key_re is not None and current == table and (index is None or count == index) and key_re.match(line):
            return no
    return None


class _Context:
    """The file being checked: builds :class:`ConfigError` messages that name the file, line and key."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = text.splitlines()

    def error(self, where: str, message: str, fix: str | None = None, *, table: str = "", key: str | None = None,
              index: int | None = None, missing: bool = False) -> ConfigError:
        line = _locate(self.lines, table, key, index)
        if line is None and key is not None:  # at least the section's header
            line = _locate(self.lines, table, None, index) if table else None
        prefix = self.path.name + (f" line {line}" if line else "")
        cls = ConfigFileNotFoundError if missing else ConfigError
        err = cls(f"{prefix}: {where} {message}".rstrip(), self.path, fix)
        err.key = where
        err.line = line
        return err


def _label(table: str, key: str | None = None, index: int | None = None, name: str | None = None) -> str:
    if table == "samples":
        head = f"[[samples]] #{index + 1}" + (f" ({name})" if name else "")
    else:
        head = f"[{table}]"
    return f"{head} {key}" if key else head


def _suggest(word: str, allowed) -> str:
    close = difflib.get_close_matches(word, list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ============================================================================================================
# Value checks: each returns the normalised value or raises through the context
# ============================================================================================================
class _Key:
    """Where a value sits: the context plus section/key/sample index, to raise errors about it."""

    def __init__(self, ctx: _Context, table: str, key: str, index: int | None = None, name: str | None = None):
        self.ctx, self.table, self.key, self.index, self.name = ctx, table, key, index, name

    @property
    def label(self) -> str:
        return _label(self.table, self.key, self.index, self.name)

    def fail(self, message: str, fix: str | None = None, *, missing: bool = False) -> ConfigError:
        return self.ctx.error(self.label, message, fix, table=self.table, key=self.key, index=self.index,
                              missing=missing)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def whole(low: int = 0, fix: str | None = None) -> Callable:
    def check(k: _Key, v):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise k.fail(f"must be a whole number >= {low}, got {_got(v)}", fix)
        return v
    return check


def number(low: float = 0.0, high: float | None = None, *, low_open: bool = False, high_open: bool = False,
           fix: str | None = None) -> Callable:
    def check(k: _Key, v):
        ok = _is_number(v) and (v > low if low_open else v >= low)
        if ok and high is not None:
            ok = v < high if high_open else v <= high
        if not ok:
            if high is None:
                what = "a positive number" if (low == 0 and low_open) else f"a number >= {low:g}"
            else:
                what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
            raise k.fail(f"must be {what}, got {_got(v)}", fix)
        return float(v)
    return check


positive = number(0.0, low_open=True)


def boolean(k: _Key, v):
    if not isinstance(v, bool):
        raise k.fail(f"must be true or false (no quotes), got {_got(v)}")
    return v


def text(k: _Key, v):
    if not isinstance(v, str) or not v.strip():
        raise k.fail(f"must be a non-empty string in quotes, got {_got(v)}")
    return v.strip()


def modality_list(k: _Key, v):
    if not isinstance(v, list) or not v:
        raise k.fail(f"must be a non-empty list of modality names (from {list(MODALITY_TABLES)}), got {_got(v)}")
    for m in v:
        if m not in MODALITY_TABLES:
            raise k.fail(f"names an unknown modality {_got(m)}" + (_suggest(m, MODALITY_TABLES) if isinstance(m, str) else ""),
                         f"Modalities are {', '.join(MODALITY_TABLES)}")
    if len(set(v)) != len(v):
        raise k.fail(f"lists a modality twice: {_got(v)}")
    return list(v)


def existing_file(what: str = "file", *, folder: bool = False, fix: str | None = None) -> Callable:
    """A path (relative to ``base``) that must exist; returns it absolute."""
    def check(k: _Key, v, base: Path):
        if not isinstance(v, str) or not v.strip():
            raise k.fail(f"must be a path in quotes, got {_got(v)}")
        path = (base / Path(v).expanduser()).resolve()
        if not path.exists():
            raise k.fail(f"points to a missing {what}: {path}", fix or "Relative paths are relative to the folder of the "
                         "configuration file; correct the path or the file's name", missing=True)
        if folder and not path.is_dir():
            raise k.fail(f"must be a folder, but {path} is a file", fix)
        if not folder and path.is_dir():
            raise k.fail(f"must be a file, but {path} is a folder", fix)
        return path
    check.needs_base = True  # type: ignore[attr-defined]
    return check


def output_path(k: _Key, v, base: Path):
    if not isinstance(v, str) or not v.strip():
        raise k.fail(f"must be a path in quotes, got {_got(v)}")
    return (base / Path(v).expanduser()).resolve()


output_path.needs_base = True  # type: ignore[attr-defined]


def resume(k: _Key, v, base: Path):
    if isinstance(v, bool):
        return v
    return existing_file("checkpoint", fix="Give the path of a checkpoint written by an earlier run with "
                         "checkpoint_every and checkpoint_dir, or resume = true to use checkpoint_dir")(k, v, base)


resume.needs_base = True  # type: ignore[attr-defined]


def _apply(check: Callable, k: _Key, value, base: Path):
    return check(k, value, base) if getattr(check, "needs_base", False) else check(k, value)
