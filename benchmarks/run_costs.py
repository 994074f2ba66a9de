"""What one run costs, per profile, detector kind, role and thread count, tabulated for planning.

    python benchmarks/run_costs.py [--runs-dir ~/glamd-runs] [--out results/benchmarks/run_costs.csv]

Reads every finished run of a run cache (set-up + training + evaluation, as ``eval.json`` records
them; ``glamd_core.costs.run_minutes``) and writes the median minutes per (profile, kind, role,
threads) to the csv that ``python -m glamd_core reproduce --plan`` falls back on when its own cache
has no run of a kind. Kinds the cache lacks are kept from the existing csv (an earlier machine's
measurements); kinds that neither has come from the committed results tables' training minutes
(``glamd_core.costs.results_costs``: no set-up, evaluation or thread count, labelled so). Prints
the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from glamd_core.costs import COST_COLUMNS, COSTS_FILE, cost_table, measured_costs, read_costs, results_costs
from glamd_core.runs import RUNS_DIR


def main(argv=None) -> pd.DataFrame:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs-dir", type=Path, default=RUNS_DIR)
    p.add_argument("--out", type=Path, default=COSTS_FILE)
    a = p.parse_args(argv)
    fresh = cost_table(measured_costs(a.runs_dir), source=f"run cache, {pd.Timestamp.now():%Y-%m-%d}")
    older = []
    if a.out.is_file():
        older.append(read_costs(a.out))  # checked: a torn or negative table is named, not merged
    older.append(cost_table(results_costs(), source="results tables: training minutes only"))
    for old in older:  # a (profile, kind, role, backbone) measured here replaces older rows of it
        measured = set(zip(fresh.profile, fresh.kind, fresh.role, fresh.backbone))
        roles = {m[:3] for m in measured}
        replaced = [(p, k, r, b) in measured or (not b and (p, k, r) in roles)  # no backbone: any backbone
                    for p, k, r, b in zip(old.profile, old.kind, old.role, old.backbone)]
        fresh = pd.concat([fresh, old[[not x for x in replaced]][COST_COLUMNS]])
    fresh = fresh.sort_values(["profile", "kind", "role", "backbone", "threads"])
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fresh = fresh.round({"minutes": 2})
    fresh.to_csv(a.out, index=False)
    print(f"from {a.runs_dir} -> {a.out}\n" + fresh.to_string(index=False))
    return fresh


if __name__ == "__main__":
    main()
