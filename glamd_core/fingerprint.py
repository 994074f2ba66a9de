"""The cross-machine fingerprint: one small canonical training, bit for bit.

Trains the smoke RetinaNet student alone (seed 0, one thread, canonical kernels) in a fresh run
cache and reports the sha256 of its trained weights' bytes and its test AP to full precision. The
committed fingerprint (``tests/cross_machine_fingerprint.json``) was made on one machine; a test
retrains it on every CI machine and compares. Equal, the machine trains the committed runs' weights;
different, the message names what differs from the machine that made it (kernels, library versions).

    python -m glamd_core.fingerprint            # print this machine's fingerprint (json)
    python -m glamd_core.fingerprint --write    # record it as the committed one
"""

from __future__ import annotations

from glamd_core.kernels import exec_canonical

if __name__ == "__main__":  # before torch starts
    exec_canonical()

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

from .files import REPO_ROOT, atomic_write_text  # noqa: E402

COMMITTED = REPO_ROOT / "tests" / "cross_machine_fingerprint.json"
# The environment fields whose difference explains a different fingerprint, in the order a reader checks them.
# Smoke's one epoch leaves the test AP at 0: a few more give an AP that carries digits to compare.
EPOCHS = 6
EXPLAINING = ("kernels", "torch", "torchvision", "numpy", "pillow", "cpu_capability", "cpu_model")


def state_sha256(state: dict) -> str:
    """sha256 over a state dict: each entry's name, dtype, shape and raw bytes, in name order."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        digest.update(name.encode() + b"\0")
        if hasattr(value, "detach"):
            tensor = value.detach().cpu().contiguous()
            digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode() + b"\0")
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
        else:
            digest.update(repr(value).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def measure(work_dir: str | Path | None = None) -> dict:
    """Train the fingerprint run in a fresh cache (``work_dir``, default a temporary folder) and return
    its run name, weights' sha256, test AP and this machine's environment."""
    from .engine import CHECKPOINT
    from .experiments import Experiment, run
    from .files import read_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(work_dir or tmp)
        exp = Experiment("retinanet", "none", "smoke", seed=0, epochs=EPOCHS)
        result = run(exp, runs_dir=base / "runs", data_dir=base / "data", progress=False)
        state = read_checkpoint(base / "runs" / result["run_dir"] / CHECKPOINT)["model"]
        return {"run": result["run_dir"], "state_sha256": state_sha256(state),
                "test_AP": result["metrics"]["test"]["AP"], "environment": result["environment"]}


def differences(committed: dict, measured: dict) -> list[str]:
    """What differs between the machine that made ``committed`` and this one's ``measured``: the
    fingerprint's fields first, then the environment fields that explain them."""
    out = [f"{k}: committed {committed.get(k)!r}, here {measured.get(k)!r}" for k in ("run", "state_sha256", "test_AP")
           if committed.get(k) != measured.get(k)]
    env_c, env_m = committed.get("environment", {}), measured.get("environment", {})
    out += [f"environment {k}: committed {env_c.get(k)!r}, here {env_m.get(k)!r}" for k in EXPLAINING
            if env_c.get(k) != env_m.get(k)]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m glamd_core.fingerprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--write", action="store_true", help=f"record this machine's fingerprint as the committed one "
                   f"({COMMITTED.relative_to(REPO_ROOT)})")
    a = p.parse_args(argv)
    measured = measure()
    if a.write:
        if not measured["environment"]["kernels"]["canonical"]:
            raise SystemExit("refusing to commit a fingerprint made without the canonical kernels")
        atomic_write_text(COMMITTED, json.dumps(measured, indent=2) + "\n")
    print(json.dumps(measured, indent=2))


if __name__ == "__main__":
    main()
