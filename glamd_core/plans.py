"""Each experiment notebook's runs, as data: one function per notebook returns its ``Experiment`` list.

The notebooks call these functions, so what a notebook trains and what a plan of the whole job
lists cannot disagree. Every run is the profile's chosen setting with the named fields changed
(``Profile.distill_for``): rows shared between notebooks -- the student, GLAMD, the global mask --
are then the same runs under the same run keys, trained once.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

from .experiments import Experiment
from .profiles import get_profile

# Table 2's patch sizes at the cpu profile. The paper sweeps 7 / 9 / 11 / 20 / 30 on an 800-px P3
# of about 100 x 150 cells; at 128 px P3 is 16 x 16 and every patch of 16 or more *is* the global
# mask (tests/test_plans.py proves it), so 20 and 30 are not trained: the global-mask runs stand for
# them. The smaller sizes keep the patch-to-map ratio of the paper's sweep within reach (7 / 100
# there is about 1 / 16 here).
PATCH_SIZES = (2, 3, 4, 5, 7, 9, 11)
SMOKE_PATCH_SIZES = (2, 7)  # CI: one size that splits the smoke P3 (8 x 8) finely, and the default

# Table 4: (feature, cls head, loc head) switched on or off; off sets that weight (alpha, beta,
# gamma) to 0, on keeps the chosen value.
TERMS = ("feat", "cls", "loc")
TERM_WEIGHT = {"feat": "alpha", "cls": "beta", "loc": "gamma"}


def _with_terms(base, terms: tuple[bool, bool, bool]):
    return replace(base, **{TERM_WEIGHT[t]: (getattr(base, TERM_WEIGHT[t]) if on else 0.0)
                            for t, on in zip(TERMS, terms)})


def glamd_setting(profile: str, kind: str = "retinanet"):
    """GLAMD's chosen ``DistillConfig`` for ``kind`` at ``profile`` (what every variant starts from)."""
    return get_profile(profile).distill_for(kind, "glamd")


def patch_size_experiments(profile: str, seeds, sizes=None, kind: str = "retinanet") -> list[Experiment]:
    """Notebook 02 (Table 2): the student, the global mask, and GLAMD at each patch size, every seed.
    ``sizes`` None: :data:`PATCH_SIZES` (``smoke``: :data:`SMOKE_PATCH_SIZES`)."""
    sizes = tuple(sizes or (SMOKE_PATCH_SIZES if profile == "smoke" else PATCH_SIZES))
    base = glamd_setting(profile, kind)
    out = [Experiment(kind, m, profile, seed=s) for m in ("none", "global") for s in seeds]
    out += [Experiment(kind, "glamd", profile, seed=s, distill=replace(base, patch_size=int(p)))
            for p in sizes for s in seeds]
    return out


# Table 4's rows in the paper's order: no term (the student), each alone, each pair, all three.
TERM_COMBINATIONS = ((False, False, False), (True, False, False), (False, True, False), (False, False, True),
                     (True, True, False), (False, True, True), (True, False, True), (True, True, True))


def ablation_experiments(profile: str, seeds, single_terms_without_glam: bool = False,
                         kind: str = "retinanet") -> list[Experiment]:
    """Notebook 05 (Table 4), in the paper's row order: all three terms without GLAM (``uniform``:
    every mask 1); with GLAM every combination of the three terms (none of them = the student
    alone); then, beyond the paper, all three with the global mask, and with
    ``single_terms_without_glam`` each term alone without GLAM."""
    base = glamd_setting(profile, kind)
    out = [Experiment(kind, "uniform", profile, seed=s) for s in seeds]
    for terms in TERM_COMBINATIONS:
        if not any(terms):
            out += [Experiment(kind, "none", profile, seed=s) for s in seeds]
        else:
            out += [Experiment(kind, "glamd", profile, seed=s, distill=_with_terms(base, terms)) for s in seeds]
    out += [Experiment(kind, "global", profile, seed=s) for s in seeds]
    if single_terms_without_glam:
        uniform = get_profile(profile).distill_for(kind, "uniform")
        out += [Experiment(kind, "uniform", profile, seed=s, distill=_with_terms(uniform, terms))
                for terms in TERM_COMBINATIONS[1:4] for s in seeds]
    return out


def terms_of(exp: Experiment) -> dict[str, bool]:
    """Which of the three terms ``exp`` trains with (the student alone: none)."""
    if exp.method in ("none", "teacher"):
        return {t: False for t in TERMS}
    config = exp.distill_config()
    return {t: bool(getattr(config, TERM_WEIGHT[t])) for t in TERMS}


def mask_of(exp: Experiment) -> str:
    """Table 4's mask column: ``GLAM``, ``global`` or ``none`` (uniform masks); the student: ``-``."""
    return {"glamd": "GLAM", "global": "global", "uniform": "none (uniform)"}.get(exp.method, "-")
