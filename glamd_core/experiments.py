"""Experiments as data, run through the run cache (``glamd_core.runs``).

An :class:`Experiment` names everything that defines one trained detector: kind, backbones,
distillation method and weights, patch size, seed and profile (which fixes dataset, image size
and schedule). ``run(experiment)`` returns the cached result or trains it; teachers and plain
students are shared by every notebook that needs them.
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from .detectors import KINDS
from .distill import METHODS, DistillConfig
from .profiles import Profile, get_profile
from .runs import DATA_DIR, REPO_ROOT, RESULTS_DIR, RUNS_DIR, git_commit, train_detector, train_distilled


@dataclass(frozen=True)
class Experiment:
    kind: str = "retinanet"
    method: str = "none"  # none: the student trained alone; teacher: the teacher itself; else a DistillConfig method
    profile: str = "cpu"
    seed: int = 0
    student: str | None = None  # default: the profile's student backbone
    teacher: str | None = None  # default: the profile's teacher backbone
    distill: DistillConfig = field(default_factory=DistillConfig)  # alpha, beta, gamma, patch size, ...

    def __post_init__(self):  # fail before any training starts, naming the choices
        if self.kind not in KINDS:
            raise ValueError(f"unknown detector kind {self.kind!r}; choose one of {KINDS}")
        if self.method not in ("teacher", *METHODS):
            raise ValueError(f"unknown method {self.method!r}; choose 'teacher' or one of {METHODS}")
        get_profile(self.profile)

    def resolved_profile(self) -> Profile:
        return get_profile(self.profile)

    @property
    def student_backbone(self) -> str:
        return self.student or self.resolved_profile().student_backbone

    @property
    def teacher_backbone(self) -> str:
        return self.teacher or self.resolved_profile().teacher_backbone


def run(exp: Experiment, runs_dir: Path = RUNS_DIR, data_dir: Path = DATA_DIR, voc_root=None) -> dict:
    """Train (or reuse) ``exp``; returns its ``eval.json`` plus the experiment's fields."""
    profile = exp.resolved_profile()
    kw = dict(runs_dir=runs_dir, voc_root=voc_root, data_dir=data_dir)
    if exp.method == "teacher":
        result = train_detector(exp.kind, exp.teacher_backbone, profile, exp.seed, **kw)
    elif exp.method == "none":
        result = train_detector(exp.kind, exp.student_backbone, profile, exp.seed, **kw)
    else:
        distill = replace(exp.distill, method=exp.method)
        result = train_distilled(exp.kind, exp.teacher_backbone, exp.student_backbone, profile, distill, exp.seed, **kw)
    return result | {"method": exp.method, "kind": exp.kind, "seed": exp.seed, "profile": exp.profile}


def run_all(experiments: list[Experiment], **kw) -> list[dict]:
    """Run (or fetch) every experiment, with a progress bar over them."""
    from tqdm.auto import tqdm

    bar = tqdm(experiments, desc="experiments")
    results = []
    for exp in bar:
        bar.set_postfix_str(f"{exp.kind} {exp.method} seed {exp.seed}")
        results.append(run(exp, **kw))
    return results


def results_frame(results: list[dict]) -> pd.DataFrame:
    """One row per run, AP metrics in percent."""
    rows = []
    for r in results:
        rows.append({"kind": r["kind"], "method": r["method"], "seed": r["seed"],
                     **{k: 100 * v for k, v in r["metrics"].items()},
                     "train_minutes": r["train_seconds"] / 60, "run": r["run_dir"],
                     # runs cached before this field existed do not know their code's commit
                     "code_commit": r.get("code_commit", "unrecorded")})
    return pd.DataFrame(rows)


def summarize(frame: pd.DataFrame, by=("kind", "method"), metric: str = "AP") -> pd.DataFrame:
    """mean, std and n of ``metric`` per group (std is NaN for n = 1)."""
    g = frame.groupby(list(by), sort=False)[metric]
    return g.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()


def list_runs(runs_dir: Path = RUNS_DIR) -> pd.DataFrame:
    """Cached runs: name, whether finished, size on disk."""
    rows = []
    for d in sorted(Path(runs_dir).glob("*/")):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        rows.append({"run": d.name, "finished": (d / "eval.json").exists(), "MB": round(size / 2**20, 1)})
    return pd.DataFrame(rows, columns=["run", "finished", "MB"])


def clear_runs(runs_dir: Path = RUNS_DIR, pattern: str = "*", unfinished_only: bool = False) -> list[str]:
    """Delete cached runs whose name matches ``pattern``; returns their names."""
    removed = []
    for d in sorted(Path(runs_dir).glob(pattern)):
        if d.is_dir() and not (unfinished_only and (d / "eval.json").exists()):
            shutil.rmtree(d)
            removed.append(d.name)
    return removed


def manifest(profile: Profile, seeds, wall_seconds: float, **extra) -> dict:
    import timm
    import torchvision

    return {"profile": profile.name, "seeds": list(seeds), "commit": git_commit(),
            "wall_seconds": round(wall_seconds, 1), "python": platform.python_version(),
            "torch": torch.__version__, "torchvision": torchvision.__version__, "timm": timm.__version__,
            "threads": torch.get_num_threads(), "machine": platform.machine(), **extra}



def results_dir(name: str, profile: str) -> Path:
    """``results/<name>/``; smoke runs (CI) go to the git-ignored ``results/_smoke/<name>/`` so they
    never overwrite the committed results of a real run."""
    base = RESULTS_DIR / "_smoke" if profile == "smoke" else RESULTS_DIR
    out = base / name
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_results(name: str, profile: Profile, seeds, wall_seconds: float, tables: dict[str, pd.DataFrame],
                  figures: dict | None = None, **extra) -> Path:
    """Tables as csv + markdown (with the provenance line), figures as png, and the manifest."""
    out = results_dir(name, profile.name)
    header = f"Profile `{profile.name}`, seeds {list(seeds)}, commit `{git_commit()}`.\n\n"
    for stem, table in tables.items():
        table.to_csv(out / f"{stem}.csv", index=False)
        (out / f"{stem}.md").write_text(header + table.to_markdown(index=False, floatfmt=".2f") + "\n")
    for stem, fig in (figures or {}).items():
        fig.savefig(out / f"{stem}.png", dpi=120, bbox_inches="tight")
    (out / "manifest.json").write_text(json.dumps(manifest(profile, seeds, wall_seconds, **extra), indent=2))
    return out
