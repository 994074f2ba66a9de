"""Two `reproduce` drivers on one checkout (issue #28): the second stops before its pool, naming
the notebook and the process that is executing it."""

import subprocess
import sys
import time

import pytest

from glamd_core import reproduce as R

_HOLDER = """
import sys, time
from glamd_core.reproduce import executing
with executing(["05_glam_ablation"], "smoke"):
    print("holding", flush=True)
    time.sleep(120)
"""


def test_a_second_driver_is_told_which_notebook_and_process(monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        trained = []
        monkeypatch.setattr(R, "train_pool", lambda *a, **k: trained.append(a) or [])
        with pytest.raises(RuntimeError, match=rf"05_glam_ablation is being executed at profile smoke by process "
                                               rf"{holder.pid}"):
            R.reproduce("smoke", ["05_glam_ablation"])
        assert trained == []  # stopped before its pool
        with pytest.raises(RuntimeError, match="05_glam_ablation is being executed"):
            R.run_notebooks(["05_glam_ablation"], "smoke")
    finally:
        holder.kill()
        holder.wait()
    deadline = time.time() + 10  # the kernel releases a dead holder's flock
    with R.executing(["05_glam_ablation"], "smoke"):
        assert time.time() < deadline
