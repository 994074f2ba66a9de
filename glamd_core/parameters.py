"""Notebook parameters, checked before anything is planned or trained.

Papermill passes parameters as the user typed them (``-p seeds 0`` is the integer 0, ``-p
confirm 3`` may arrive as the string '3'), and a bad one used to surface only after hours of
training -- or never: ``seeds: []`` silently became the profile's seeds, ``patch_sizes: [2.9, 7]``
trained patch 2 and tabulated it as 2.9. Every notebook calls :func:`check_parameters` in the cell
after its ``parameters`` cell; each parameter name has one rule here, shared by every notebook.
"""

from __future__ import annotations

import math
import os
from numbers import Integral, Real
from pathlib import Path

from .detectors import KINDS
from .profiles import PROFILES


class ParameterError(ValueError):
    """A notebook parameter that cannot be used; the message names it, its value and what it takes."""


def _bad(name: str, value, wants: str) -> ParameterError:
    return ParameterError(f"notebook parameter {name} = {value!r}: {wants}")


def _int(name, value, low=0):
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        raise _bad(name, value, f"an integer >= {low} (not a string, a float or a bool)")
    return int(value)


def _optional(rule):
    return lambda name, value: None if value is None else rule(name, value)


def _non_empty_list(name, value, wants: str) -> None:
    if not isinstance(value, (list, tuple)) or not value:
        raise _bad(name, value, wants)


def _distinct_ints(low: int, wants: str, twice: str):
    """A rule for a non-empty list of distinct integers >= ``low``; ``wants`` / ``twice`` say what it takes."""
    def rule(name, value):
        _non_empty_list(name, value, wants)
        out = [_int(f"{name}[{i}]", v, low) for i, v in enumerate(value)]
        if len(set(out)) != len(out):
            raise _bad(name, value, twice)
        return out
    return rule


_seed_list = _distinct_ints(0, "None (the profile's seeds) or a non-empty list of seeds, e.g. [0, 1, 2]",
                            "distinct seeds (a seed given twice would pair with itself)")
_positive_int_list = _distinct_ints(1, "None (the default list) or a non-empty list of positive integers",
                                    "distinct values")


def _multipliers(name, value):
    _non_empty_list(name, value, "None (the default multipliers) or a non-empty list of numbers >= 0")
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, Real) or not math.isfinite(v) or v < 0:
            raise _bad(f"{name}[{i}]", v, "a finite number >= 0")
    return [float(v) for v in value]


def _bool(name, value):
    if not isinstance(value, bool):
        raise _bad(name, value, "True or False (a string such as 'no' would count as true)")
    return value


def _kind(name, value):
    if value not in KINDS:
        raise _bad(name, value, f"one of {list(KINDS)}")
    return value


def _kinds(name, value):
    _non_empty_list(name, value, f"a non-empty list of detector kinds from {list(KINDS)}")
    return [_kind(f"{name}[{i}]", k) for i, k in enumerate(value)]


def _gap_kinds(name, value):
    from .plans import GAP_KINDS

    kinds = _kinds(name, value)
    for i, k in enumerate(kinds):
        if k not in GAP_KINDS:
            raise _bad(f"{name}[{i}]", k, f"one of {list(GAP_KINDS)} (the kinds notebook 10's points are planned for)")
    return kinds


def _backbones(name, value):
    import difflib

    import timm

    _non_empty_list(name, value, "a non-empty list of timm backbone names, e.g. ['resnet10t', 'resnet18']")
    known = set(timm.list_models())
    for i, b in enumerate(value):
        if not isinstance(b, str) or b not in known:
            close = difflib.get_close_matches(str(b), known, n=3)
            raise _bad(f"{name}[{i}]", b, "a timm backbone name" + (f" (did you mean {close}?)" if close else ""))
    return list(value)


def _profile(name, value):
    if value not in PROFILES:
        raise _bad(name, value, f"one of {sorted(PROFILES)} (or set $GLAMD_PROFILE)")
    return value


def _positive_number(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise _bad(name, value, "a finite number > 0")
    return float(value)


def _share(name, value):
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 < value <= 1:
        raise _bad(name, value, "a share in (0, 1], e.g. 0.1 for 10 %")
    return float(value)


def _path(name, value):
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        raise _bad(name, value, "None or a folder path")
    if not Path(value).expanduser().is_dir():
        raise _bad(name, value, "an existing folder")
    return value


def _grid(name, value):
    from .distill import LOSS_FORMS

    _non_empty_list(name, value, "None (calibration.GRID) or a non-empty list of (loss_form, alpha) pairs")
    for i, point in enumerate(value):
        if (not isinstance(point, (list, tuple)) or len(point) != 2 or point[0] not in LOSS_FORMS
                or isinstance(point[1], bool) or not isinstance(point[1], Real) or not point[1] > 0):
            raise _bad(f"{name}[{i}]", point, f"a pair (loss_form in {list(LOSS_FORMS)}, alpha > 0)")
    return value


RULES = {
    "profile": _profile,
    "seeds": _optional(_seed_list),
    "sweep_seeds": _optional(_seed_list),
    "claim_seeds": _optional(_seed_list),
    "kinds": _kinds,
    "gap_kinds": _gap_kinds,
    "gap_backbones": _optional(_backbones),
    "kind": _kind,
    "screen_kind": _kind,
    "workers": _optional(lambda n, v: _int(n, v, 1)),
    "data_root": _optional(_path),
    "patch_sizes": _optional(_positive_int_list),
    "weight_multipliers": _optional(_multipliers),
    "temperature_multipliers": _optional(_multipliers),
    "single_terms_without_glam": _bool,
    "confirm": lambda n, v: _int(n, v, 0),
    "n_images": lambda n, v: _int(n, v, 1),
    "show": lambda n, v: _int(n, v, 1),
    "sample_seed": lambda n, v: _int(n, v, 0),
    "seed": lambda n, v: _int(n, v, 0),
    "second_patch": lambda n, v: _int(n, v, 1),
    "patch_size": _optional(lambda n, v: _int(n, v, 1)),
    "temperature": _optional(_positive_number),
    "grid": _optional(_grid),
    "tolerance_share": _share,
}


def check_parameters(**parameters) -> dict:
    """Check every parameter by its rule in :data:`RULES`; returns them as checked (lists of seeds
    as lists of ints). Raises :class:`ParameterError` naming the first bad one, before any run."""
    unknown = sorted(set(parameters) - set(RULES))
    if unknown:
        raise TypeError(f"no rule for notebook parameter(s) {unknown}; add one to glamd_core.parameters.RULES")
    return {name: RULES[name](name, value) for name, value in parameters.items()}
