"""How many code lines each notebook holds, and how many outside the cells that draw a figure.

    python benchmarks/notebook_lines.py [--rev COMMIT]

A line is a non-blank line of a code cell. "Plots aside" leaves out every cell that draws: it calls
``plt.subplots`` / ``plt.figure``, ``.plot(`` or ``imshow(``, or a ``glamd_core.viz`` function. With
``--rev``, the notebooks as they were at that commit (``git show``). docs/architecture.md quotes it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRAWS = ("plt.subplots", "plt.figure", "viz.", ".plot(", "fig.tight_layout", "imshow(")


def count(notebook: dict) -> tuple[int, int]:
    """(code lines, code lines outside the cells that draw) of one notebook's JSON."""
    lines = aside = 0
    for cell in notebook["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        n = sum(1 for line in source.splitlines() if line.strip())
        lines += n
        aside += 0 if any(d in source for d in DRAWS) else n
    return lines, aside


def notebooks(rev: str | None) -> dict[str, dict]:
    if rev is None:
        return {p.name: json.loads(p.read_text()) for p in sorted((REPO / "notebooks").glob("*.ipynb"))}
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "notebooks/"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    return {Path(n).name: json.loads(subprocess.run(["git", "show", f"{rev}:{n}"], cwd=REPO, capture_output=True,
                                                    text=True, check=True).stdout)
            for n in sorted(names) if n.endswith(".ipynb")}


def main(argv=None) -> dict[str, tuple[int, int]]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rev", default=None, help="a commit; default: the work tree")
    a = p.parse_args(argv)
    counts = {name: count(nb) for name, nb in notebooks(a.rev).items()}
    for name, (lines, aside) in counts.items():
        print(f"{name:34s} {lines:4d} code lines, {aside:4d} plots aside")
    print(f"{'all':34s} {sum(c[0] for c in counts.values()):4d} code lines, {sum(c[1] for c in counts.values()):4d} plots aside")
    return counts


if __name__ == "__main__":
    main()
