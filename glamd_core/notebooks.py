"""Run the experiment notebooks with papermill at a chosen profile."""

from __future__ import annotations

from pathlib import Path

from .experiments import results_dir
from .runs import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"


def notebook_paths(names=()) -> list[Path]:
    if not names:
        return sorted(NOTEBOOK_DIR.glob("[0-9]*.ipynb"))
    paths = []
    for n in names:
        p = Path(n)
        if not p.suffix:
            p = p.with_suffix(".ipynb")
        if not p.is_file():
            p = NOTEBOOK_DIR / p.name
        if not p.is_file():
            raise FileNotFoundError(f"no notebook {n!r} (looked in {NOTEBOOK_DIR})")
        paths.append(p)
    return paths


def run_notebooks(names=(), profile: str = "cpu", workers: int | None = None) -> list[Path]:
    """Execute each notebook with ``-p profile <profile>`` (and ``-p workers <workers>`` when
    given: how many runs each trains at once); the executed copy is saved beside its results as
    ``results/<name>/<name>.ipynb`` (``results/_smoke/...`` for smoke)."""
    import papermill

    parameters = {"profile": profile} | ({} if workers is None else {"workers": int(workers)})
    outs = []
    for path in notebook_paths(names):
        out = results_dir(path.stem, profile) / path.name
        papermill.execute_notebook(str(path), str(out), parameters=parameters, cwd=str(REPO_ROOT),
                                   progress_bar=True, kernel_name="python3")
        outs.append(out)
    return outs
