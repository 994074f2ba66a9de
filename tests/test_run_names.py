"""Every run name of every notebook's plan, at smoke and cpu, held equal to the committed list.

A refactor must not move a key: the committed results and the run cache point at these names. A
change that means to move keys (a new keyed setting, another dataset) regenerates the list with
``GLAMD_WRITE_RUN_NAMES=1 pytest tests/test_run_names.py`` and says so in its commit. Notebook 04's
screen reads an alpha from notebook 00's committed gradient balance, so re-executing 00 moves those
names too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from glamd_core import plans
from glamd_core.experiments import run_dir

NAMES = Path(__file__).with_name("run_names.json")


def plan_names() -> dict[str, dict[str, list[str]]]:
    return {profile: {nb: sorted({run_dir(e).name for e in plans.notebook_experiments(nb, profile)[0]})
                      for nb in plans.NOTEBOOK_PLANS} for profile in ("smoke", "cpu")}


def test_every_plan_keeps_its_run_names(canonical_keys):
    names = plan_names()
    if os.environ.get("GLAMD_WRITE_RUN_NAMES"):
        NAMES.write_text(json.dumps(names, indent=1) + "\n")
    committed = json.loads(NAMES.read_text())
    for profile in names:
        for nb in names[profile]:
            now, then = set(names[profile][nb]), set(committed[profile].get(nb, []))
            assert now == then, (f"{profile} {nb}: run names moved: new {sorted(now - then)[:4]}, gone "
                                 f"{sorted(then - now)[:4]} (see this file's docstring)")
    assert sum(len(v) for v in names["cpu"].values()) > 300  # the whole plan, not an empty list
