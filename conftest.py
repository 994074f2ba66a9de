"""Repo-level pytest setup: notebooks run under nbval at the `smoke` profile.

nbval's kernels inherit this process's environment, and every notebook's parameters cell reads
GLAMD_PROFILE, so setting it here is all it takes.
"""

import os

os.environ.setdefault("GLAMD_PROFILE", "smoke")

# Under pytest-xdist (pyproject's addopts: two test processes on two cores) each process keeps to
# one torch thread, as every training run does, so the two do not fight over the cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    torch.set_num_threads(1)
