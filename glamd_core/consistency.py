"""One run name, one set of weights, one AP: a check over the committed results.

A run name is a key over the run's configuration (``run_key``). If the same name shows two APs in
``results/``, two different sets of weights hide under one name -- say a teacher trained once on one
thread and once on two -- and nobody can tell which number the main job regenerates. This reads
every table (``*.csv``) and every manifest of the committed results folders, and lists what
disagrees or cannot be read -- nothing is passed over silently:

- a run (name and split) with more than one AP across the tables and manifests;
- a file that cannot be read: an empty or torn csv, a manifest that is not a JSON object, a
  manifest's ``teachers`` that is not ``{kind: [{run, AP}]}``;
- a row of a runs table that cannot be read: no run name, an AP that is not a number (empty and NaN
  included), a seed other than its run name's ``-s<seed>-`` (a duplicated row given another seed).
  A run listed in several rows of one table (04 lists a run under each part it belongs to) is no
  conflict while the rows agree;
- a notebook's results folder -- named like a notebook under ``notebooks/``, or whose manifest names
  one -- without a manifest, whose manifest names no teacher run or not one for a detector kind it
  distils, or whose manifest does not record the canonical CPU kernels (``kernels.canonical``, see
  ``glamd_core.kernels``): results made on other kernels are not the ones the main job regenerates;
- a detector kind whose teacher is not the same run in every folder of a profile.

Which tables are checked: a *runs table* has a ``run`` column and an AP column (``AP``, with the
row's ``split`` or test; ``AP val``; ``AP test``), and every row of it is read. Any other table (a
summary over seeds, per-image measurements, a per-epoch log) states no run's AP: it is listed by
:func:`not_checked` as ``not checked: <file> (no run column)`` or ``(no AP column)``, which the
command prints above its verdict -- so a runs table that lost a column shows up there, not nowhere.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .files import REPO_ROOT

RESULTS = REPO_ROOT / "results"
NOTEBOOKS = REPO_ROOT / "notebooks"
# The tables round to 2 decimals in places (a run's AP copied into a summary table): differences
# below this are the rounding, not two sets of weights.
TOLERANCE = 0.006
_PLAIN = {"none", "teacher", "student"}
_AP_COLUMNS = ("AP", "AP val", "AP test")
_SEED_OF_RUN = re.compile(r"-s(\d+)-[0-9a-f]{12}$")  # <kind>-<backbone>[-<method>]-s<seed>-<key>


@dataclass
class _Scan:
    """What the committed results state (``aps``), what cannot be read (``problems``) and what is not checked."""
    aps: list[dict] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tables: dict[Path, pd.DataFrame] = field(default_factory=dict)
    manifests: dict[Path, dict | None] = field(default_factory=dict)  # None: there, but unreadable


def _folders(results_dir: Path) -> list[Path]:
    """The committed results folders: scratch profiles' (``_smoke``) and staging (``.x.partial``) are not."""
    return sorted(d for d in Path(results_dir).iterdir() if d.is_dir() and not d.name.startswith(("_", ".")))


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _number(text: str) -> float | None:
    """A csv cell as a finite number, else None (empty, NaN, text)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _read_manifest(path: Path, where: str, scan: _Scan) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        data = error
    if not isinstance(data, dict):
        why = _first_line(data) if isinstance(data, Exception) else f"a JSON {type(data).__name__}"
        scan.problems.append(f"{where}: not a JSON object ({why}); execute its notebook again")
        return None
    return data


def _read_table(csv: Path, where: str, scan: _Scan) -> pd.DataFrame | None:
    """Every cell as its text (an AP is parsed row by row, so a bad one is named with its line)."""
    try:
        return pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.EmptyDataError, pd.errors.ParserError) as error:
        scan.problems.append(f"{where}: unreadable table ({_first_line(error)})")
        return None


def _runs_table_aps(t: pd.DataFrame, where: str, scan: _Scan) -> None:
    """Each row's (run, split, AP), or a problem line naming the row (``line``: the file's line, header 1)."""
    columns = [c for c in _AP_COLUMNS if c in t.columns]
    for i, row in enumerate(t.to_dict("records")):
        line = f"{where} line {i + 2}"
        run = row["run"].strip()
        if not run:
            scan.problems.append(f"{line}: no run name")
            continue
        named = _SEED_OF_RUN.search(run)
        if "seed" in row and named:
            seed = _number(row["seed"])
            if seed != int(named.group(1)):
                scan.problems.append(f"{line}: seed {row['seed']}, but run {run} is seed {named.group(1)}")
        for column in columns:
            ap = _number(row[column])
            if ap is None:
                scan.problems.append(f"{line}: {column} {row[column]!r} is not a number")
                continue
            split = (row.get("split") or "test") if column == "AP" else column.split()[1]
            scan.aps.append({"run": run, "split": split, "AP": ap, "file": where})


def _teachers(m: dict, where: str, scan: _Scan) -> dict[str, list[dict]] | None:
    """A manifest's ``teachers`` ({kind: [{run, AP}]}), checked; None when it names none."""
    named = m.get("teachers")
    if named is None:
        return None
    ok = isinstance(named, dict) and all(isinstance(ts, list) and all(
        isinstance(t, dict) and isinstance(t.get("run"), str)
        and (t.get("AP") is None or _number(t.get("AP")) is not None) for t in ts) for ts in named.values())
    if not ok:
        scan.problems.append(f"{where}: 'teachers' is not {{kind: [{{run, AP}}]}} (got {str(named)[:80]})")
        return {}
    return named


def _scan(results_dir: Path) -> _Scan:
    scan = _Scan()
    results_dir = Path(results_dir)
    for folder in _folders(results_dir):
        for csv in sorted(folder.glob("*.csv")):
            where = str(csv.relative_to(results_dir))
            t = _read_table(csv, where, scan)
            if t is None:
                continue
            scan.tables[csv] = t
            if "run" not in t.columns:
                scan.notes.append(f"not checked: {where} (no run column)")
            elif not any(c in t.columns for c in _AP_COLUMNS):
                scan.notes.append(f"not checked: {where} (no AP column)")
            else:
                _runs_table_aps(t, where, scan)
        path = folder / "manifest.json"
        if path.exists():
            where = str(path.relative_to(results_dir))
            m = scan.manifests[folder] = _read_manifest(path, where, scan)
            named = _teachers(m, where, scan) if m is not None else None
            for teachers in (named or {}).values():
                scan.aps += [{"run": t["run"], "split": "test", "AP": float(t["AP"]), "file": where}
                             for t in teachers if t.get("AP") is not None]
    return scan


def run_aps(results_dir: Path = RESULTS) -> pd.DataFrame:
    """Every (run, split, AP) the committed results state, with the file that states it."""
    return pd.DataFrame(_scan(results_dir).aps, columns=["run", "split", "AP", "file"])


def not_checked(results_dir: Path = RESULTS) -> list[str]:
    """The tables that state no run's AP, one ``not checked: <file> (<why>)`` line each."""
    return _scan(results_dir).notes


def _distilled_kinds(scan: _Scan, folder: Path) -> set[str]:
    kinds = set()
    for csv, t in scan.tables.items():
        if csv.parent == folder and {"kind", "method"} <= set(t.columns):
            kinds |= set(t.loc[~t.method.isin(_PLAIN), "kind"])
    return kinds


def _kernels_problem(m: dict) -> str | None:
    """Why a manifest does not record the canonical CPU kernels (None: it does)."""
    kernels = m.get("kernels")
    if not isinstance(kernels, dict) or "canonical" not in kernels:
        return "its manifest records no kernels"
    return None if kernels["canonical"] is True else f"canonical: {json.dumps(kernels['canonical'])}"


def _reading_problems(folder: Path, manifest: dict) -> list[str]:
    """A notebook's reading lives in its ``conclusion.md`` and its verdicts in ``claims.csv`` (computed,
    issue #35): a manifest that carries a conclusion of its own, or a claims family's folder without
    its claims table or conclusion, is listed."""
    from .claims import FAMILIES, family

    out = []
    if "conclusion" in manifest:
        out.append(f"{folder.name}: its manifest carries a written conclusion; verdicts live in claims.csv and the "
                   "reading in conclusion.md (execute the notebook again)")
    judged = any(notebook == folder.name and family(name) for name, notebook in FAMILIES.items())
    for needed in (["claims.csv", "conclusion.md"] if judged else []):
        if not (folder / needed).is_file():
            out.append(f"{folder.name}: no {needed} (its claims family's table and computed reading)")
    return out


def conflicts(results_dir: Path = RESULTS, notebooks_dir: Path = NOTEBOOKS) -> list[str]:
    """What disagrees or cannot be read in ``results_dir``, one line each (empty: consistent)."""
    scan = _scan(results_dir)
    out = list(scan.problems)
    aps = pd.DataFrame(scan.aps, columns=["run", "split", "AP", "file"])
    for (run, split), g in aps.groupby(["run", "split"], sort=True):
        if g.AP.max() - g.AP.min() > TOLERANCE:
            by_ap = g.groupby(g.AP.round(2), sort=True)["file"].agg(lambda f: ", ".join(sorted(set(f))))
            stated = "; ".join(f"{ap:.2f} in {f}" for ap, f in by_ap.items())
            out.append(f"run {run} ({split}) has {len(by_ap)} APs: {stated}")
    notebooks = {p.stem for p in Path(notebooks_dir).glob("[0-9]*.ipynb")}
    teachers: dict[tuple[str, str], dict[str, list[str]]] = {}
    for folder in _folders(results_dir):
        if not (folder / "manifest.json").exists():
            if folder.name in notebooks:  # taken for a benchmark's folder, it would pass unchecked
                out.append(f"{folder.name}: a notebook's results folder without manifest.json; execute the "
                           "notebook again")
            continue
        m = scan.manifests[folder]
        if m is None or ("notebook" not in m and folder.name not in notebooks):
            continue  # unreadable (listed above), or a benchmark's folder: its runs are checked above
        kernels = _kernels_problem(m)
        if kernels:
            out.append(f"{folder.name}: not made on the canonical kernels ({kernels}); execute the notebook "
                       "again with `make reproduce` (docs/reproducibility.md)")
        out += _reading_problems(folder, m)
        named = _teachers(m, "", _Scan())  # its problems are listed by the scan
        if named is None:
            out.append(f"{folder.name}: its manifest names no teacher run (executed before manifests named them)")
            continue
        for kind in sorted(_distilled_kinds(scan, folder) - set(named)):
            out.append(f"{folder.name}: distils {kind} but its manifest names no {kind} teacher")
        for kind, runs in named.items():
            for t in runs:
                teachers.setdefault((m.get("profile", "?"), kind), {}).setdefault(t["run"], []).append(folder.name)
    for (profile, kind), runs in sorted(teachers.items()):
        if len(runs) > 1:
            out.append(f"profile {profile}, {kind}: {len(runs)} teacher runs: "
                       + "; ".join(f"{r} in {', '.join(f)}" for r, f in sorted(runs.items())))
    return out


def main() -> None:
    """Print the tables not checked, then the conflicts (exit 1) or that there are none."""
    for note in not_checked(RESULTS):
        print(note)
    found = conflicts(RESULTS)
    print("\n".join(found) if found else f"{RESULTS}: one AP per run, one teacher per kind")
    raise SystemExit(1 if found else 0)


if __name__ == "__main__":
    main()
