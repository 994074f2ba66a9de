"""Run the experiment notebooks with papermill at a chosen profile."""

from __future__ import annotations

import os
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
        # papermill saves the notebook after every cell: run it beside results/<name>/ and move it in
        # only when it has finished, so a killed or failed run never leaves a half-executed copy there.
        # A failed run's copy stays at the partial path, for its traceback.
        where = results_dir(path.stem, profile, create=False)
        partial = where.with_name(f".{path.stem}.partial.ipynb")  # papermill wants the .ipynb suffix
        partial.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(str(path), str(partial), parameters=parameters, cwd=str(REPO_ROOT),
                                   progress_bar=True, kernel_name="python3")
        where.mkdir(parents=True, exist_ok=True)
        out = where / path.name
        os.replace(partial, out)
        outs.append(out)
    return outs
