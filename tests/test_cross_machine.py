"""The cross-machine test: this machine, on the canonical kernels, trains the committed fingerprint's
weights bit for bit (glamd_core.fingerprint; docs/reproducibility.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glamd_core import fingerprint, kernels
from glamd_core.files import REPO_ROOT


def _measure_canonically() -> dict:
    """The fingerprint from a fresh process started with the canonical settings, whatever this
    pytest process was started with."""
    env = kernels.canonical_env()
    env.pop(kernels.NATIVE_OPT_OUT, None)
    out = subprocess.run([sys.executable, "-m", "glamd_core.fingerprint"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout[out.stdout.index("{"):])


@pytest.mark.skipif(not kernels.cpu_supports_avx2(),
                    reason="this CPU has no AVX2: the canonical kernels cannot run here, so it cannot train the "
                    "committed runs' weights (docs/reproducibility.md)")
def test_this_machine_trains_the_committed_weights_bit_for_bit():
    committed = json.loads(fingerprint.COMMITTED.read_text())
    measured = _measure_canonically()
    assert measured["environment"]["kernels"]["canonical"], measured["environment"]["kernels"]
    diff = fingerprint.differences(committed, measured)
    assert not diff, ("this machine does not train the committed fingerprint's weights; what differs from the machine "
                      "that made it:\n  " + "\n  ".join(diff) + "\nSee docs/reproducibility.md (cross-machine "
                      "reproducibility); `python -m glamd_core.fingerprint` prints this machine's fingerprint.")


def test_differences_name_the_kernels_and_versions_that_differ():
    committed = {"run": "r", "state_sha256": "a", "test_AP": 0.5,
                 "environment": {"kernels": {"canonical": True}, "torch": "2.14.1", "pillow": "13.0.0"}}
    measured = {"run": "r", "state_sha256": "b", "test_AP": 0.5,
                "environment": {"kernels": {"canonical": False}, "torch": "2.14.1", "pillow": "12.0.0"}}
    diff = fingerprint.differences(committed, measured)
    assert diff[0].startswith("state_sha256: committed 'a', here 'b'")
    assert any(d.startswith("environment kernels") for d in diff)
    assert any(d.startswith("environment pillow: committed '13.0.0', here '12.0.0'") for d in diff)
    assert not any("torch" in d for d in diff)
    assert fingerprint.differences(committed, committed) == []


def test_state_sha256_sees_one_changed_bit():
    import torch

    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    flipped = {"w": state["w"].clone(), "n": state["n"]}
    flipped["w"].view(torch.int32)[0, 0] ^= 1  # the lowest bit of one float
    assert fingerprint.state_sha256(state) == fingerprint.state_sha256({k: v.clone() for k, v in state.items()})
    assert fingerprint.state_sha256(state) != fingerprint.state_sha256(flipped)
    assert fingerprint.state_sha256(state) != fingerprint.state_sha256({"w": state["w"].reshape(3, 2), "n": state["n"]})
