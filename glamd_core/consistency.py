"""One run name, one set of weights, one AP: a check over the committed results.

A run name is a key over the run's configuration (``run_key``). If the same name shows two APs in
``results/``, two different sets of weights hide under one name -- say a teacher trained once on one
thread and once on two -- and nobody can tell which number the main job regenerates. This reads
every table under ``results/`` and every manifest, and lists what disagrees:

- a run (name and split) with more than one AP across the tables and manifests;
- a notebook's results folder whose manifest names no teacher run, or not one for a detector
  kind it distils;
- a detector kind whose teacher is not the same run in every folder of a profile.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .files import REPO_ROOT

RESULTS = REPO_ROOT / "results"
# The tables round to 2 decimals in places (a run's AP copied into a summary table): differences
# below this are the rounding, not two sets of weights.
TOLERANCE = 0.006
_PLAIN = {"none", "teacher", "student"}


def _folders(results_dir: Path) -> list[Path]:
    """The committed results folders: scratch profiles' (``_smoke``) and staging (``.x.partial``) are not."""
    return sorted(d for d in Path(results_dir).iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))


def _manifest(folder: Path) -> dict:
    path = folder / "manifest.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a manifest is a JSON object, got {type(data).__name__}")
    return data


def run_aps(results_dir: Path = RESULTS) -> pd.DataFrame:
    """Every (run, split, AP) the committed results state, with the file that states it."""
    rows = []
    for folder in _folders(results_dir):
        for csv in sorted(folder.glob("*.csv")):
            t = pd.read_csv(csv)
            where = str(csv.relative_to(results_dir))
            if "run" not in t.columns:
                continue
            if "AP" in t.columns:
                split = t["split"] if "split" in t.columns else "test"
                rows += [{"run": r, "split": s, "AP": a, "file": where}
                         for r, s, a in zip(t["run"], pd.Series(split, index=t.index), t["AP"])]
            for s in ("val", "test"):
                if f"AP {s}" in t.columns:
                    rows += [{"run": r, "split": s, "AP": a, "file": where} for r, a in zip(t["run"], t[f"AP {s}"])]
        for kind, teachers in _manifest(folder).get("teachers", {}).items():
            rows += [{"run": t["run"], "split": "test", "AP": t["AP"], "file": str((folder / "manifest.json")
                      .relative_to(results_dir))} for t in teachers if t.get("AP") is not None]
    frame = pd.DataFrame(rows, columns=["run", "split", "AP", "file"])
    return frame[frame.run.notna() & frame.AP.notna()].reset_index(drop=True)


def _distilled_kinds(folder: Path) -> set[str]:
    kinds = set()
    for csv in folder.glob("*.csv"):
        t = pd.read_csv(csv)
        if {"kind", "method"} <= set(t.columns):
            kinds |= set(t.loc[~t.method.isin(_PLAIN), "kind"])
    return kinds


def conflicts(results_dir: Path = RESULTS) -> list[str]:
    """What disagrees in ``results_dir``, one line each (empty: consistent)."""
    out = []
    aps = run_aps(results_dir)
    for (run, split), g in aps.groupby(["run", "split"], sort=True):
        if g.AP.max() - g.AP.min() > TOLERANCE:
            by_ap = g.groupby(g.AP.round(2), sort=True)["file"].agg(lambda f: ", ".join(sorted(set(f))))
            stated = "; ".join(f"{ap:.2f} in {f}" for ap, f in by_ap.items())
            out.append(f"run {run} ({split}) has {len(by_ap)} APs: {stated}")
    teachers: dict[tuple[str, str], dict[str, list[str]]] = {}
    for folder in _folders(results_dir):
        m = _manifest(folder)
        if "notebook" not in m:
            continue  # a benchmark's folder: its runs are checked above, it names no teacher
        if "teachers" not in m:
            out.append(f"{folder.name}: its manifest names no teacher run (executed before manifests named them)")
            continue
        for kind in sorted(_distilled_kinds(folder) - set(m["teachers"])):
            out.append(f"{folder.name}: distils {kind} but its manifest names no {kind} teacher")
        for kind, named in m["teachers"].items():
            for t in named:
                teachers.setdefault((m.get("profile", "?"), kind), {}).setdefault(t["run"], []).append(folder.name)
    for (profile, kind), runs in sorted(teachers.items()):
        if len(runs) > 1:
            out.append(f"profile {profile}, {kind}: {len(runs)} teacher runs: "
                       + "; ".join(f"{r} in {', '.join(f)}" for r, f in sorted(runs.items())))
    return out


def main() -> None:
    found = conflicts()
    print("\n".join(found) if found else f"{RESULTS}: one AP per run, one teacher per kind")
    raise SystemExit(1 if found else 0)


if __name__ == "__main__":
    main()
