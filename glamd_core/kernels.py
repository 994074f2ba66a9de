"""Canonical CPU kernels: what makes a CPU run's weights the same on every x86-64 machine.

CPU float sums depend on the vector kernels torch dispatches to: AVX-512 and AVX2 kernels add in
other orders, so the same run trains other weights on machines of another kind
(``docs/reproducibility.md`` has the measurements). Pinned to AVX2 -- ATen's dispatch, oneDNN's
instruction set and MKL's conditional numerical reproducibility, all three, each read once when
the library starts -- an AVX-512 machine trains the weights an AVX2-only machine trains.

A process is *canonical* when the three settings were in its environment when it started (read
back from ``/proc/self/environ``: set later, torch may already have read other values) and ATen
reports AVX2. Every run key names the kernels (:func:`kernel_key`), so a run of another process
is never found as a canonical one. The command line and the Makefile start canonical processes
(:func:`exec_canonical`); importing ``glamd_core`` as a library changes nothing in the caller's
process -- its runs are keyed by its own kernels, with a warning saying how to get canonical ones.

This module does not import torch at import time: :func:`exec_canonical` must run before it.
"""

from __future__ import annotations

import os
import platform
import sys
import warnings
from pathlib import Path

# The settings, as each library spells them. All three are needed: ATEN_CPU_CAPABILITY alone
# gave another AP (docs/reproducibility.md).
CANONICAL_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
CANONICAL_KEY = "avx2-pinned"  # the run keys' name for canonical kernels
NATIVE_OPT_OUT = "GLAMD_NATIVE_KERNELS"  # set to 1: keep this machine's kernels (runs keyed by them)
DOC = "docs/reproducibility.md"


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``), None where they cannot be read."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_supports_avx2() -> bool:
    """Whether this CPU can run the canonical kernels: x86-64 with AVX2 and FMA."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    flags = cpu_flags()
    return flags is not None and {"avx2", "fma"} <= flags


def _start_environment() -> dict[str, str] | None:
    """This process's environment as it was when it started (None where the OS does not show it)."""
    try:
        raw = Path(f"/proc/{os.getpid()}/environ").read_bytes()
    except OSError:
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


# Where /proc is missing (macOS, Windows): the environment when this module was first imported,
# trusted only if torch had not started yet.
_AT_IMPORT = None if "torch" in sys.modules else {k: os.environ.get(k) for k in CANONICAL_ENV}


def settings_at_start() -> dict[str, str | None]:
    """The three settings as this process started with them (None: unset, or unknowable)."""
    start = _start_environment()
    if start is None:
        return dict(_AT_IMPORT) if _AT_IMPORT is not None else {k: None for k in CANONICAL_ENV}
    return {k: start.get(k) for k in CANONICAL_ENV}


def state() -> dict:
    """What this process's kernels are: ATen's dispatched capability, the oneDNN and MKL settings at
    start (and now, where someone changed them since), and whether that is canonical. Recorded in
    every ``eval.json`` and manifest."""
    import torch

    at_start = settings_at_start()
    aten = torch.backends.cpu.get_cpu_capability()
    canonical = aten == "AVX2" and all(at_start[k] == v for k, v in CANONICAL_ENV.items())
    out = {"aten_capability": aten, "onednn_max_cpu_isa": at_start["ONEDNN_MAX_CPU_ISA"],
           "mkl_cbwr": at_start["MKL_CBWR"], "aten_cpu_capability_env": at_start["ATEN_CPU_CAPABILITY"],
           "canonical": canonical, "cpu_avx2": cpu_supports_avx2()}
    changed = {k: os.environ.get(k) for k in CANONICAL_ENV if os.environ.get(k) != at_start[k]}
    if changed:
        out["changed_after_start"] = changed  # too late to take effect, recorded so nobody is misled
    return out


_warned = False


def kernel_key() -> str:
    """The kernels as run keys name them: :data:`CANONICAL_KEY`, or what this process runs with.
    A non-canonical process warns once that its runs are not the committed ones."""
    global _warned
    s = state()
    if s["canonical"]:
        return CANONICAL_KEY
    key = (f"aten={s['aten_capability']} onednn={s['onednn_max_cpu_isa'] or 'native'} "
           f"mkl_cbwr={s['mkl_cbwr'] or 'native'}")
    if not _warned:
        _warned = True
        warnings.warn(f"this process does not run the canonical CPU kernels ({key}; {why_not_canonical(s)}): its "
                      f"runs are keyed by its kernels and are not the committed runs. {how_to_fix()}",
                      stacklevel=2)
    return key


def why_not_canonical(s: dict | None = None) -> str:
    s = state() if s is None else s
    if not s["cpu_avx2"]:
        return f"this CPU ({platform.machine()}) has no AVX2, so the canonical kernels cannot run here"
    if s.get("changed_after_start"):
        return "the settings were changed after the process started, when torch may already have read them"
    missing = [k for k, v in CANONICAL_ENV.items() if s.get({"ATEN_CPU_CAPABILITY": "aten_cpu_capability_env",
                                                             "ONEDNN_MAX_CPU_ISA": "onednn_max_cpu_isa",
                                                             "MKL_CBWR": "mkl_cbwr"}[k]) != v]
    if missing:
        return f"{', '.join(missing)} not set to the canonical value when the process started"
    return f"ATen dispatches to {s['aten_capability']}, not AVX2"


def how_to_fix() -> str:
    exports = " ".join(f"{k}={v}" for k, v in CANONICAL_ENV.items())
    return (f"Start the process with {exports} in its environment (the `make` targets and `python -m glamd_core` do; "
            f"for JupyterLab: `make lab`, or restart the kernel from a shell that exports them). See {DOC}.")


def canonical_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) with the canonical settings added."""
    return dict(os.environ if env is None else env) | CANONICAL_ENV


def exec_canonical(argv: list[str] | None = None) -> None:
    """Restart this process with the canonical settings unless it already has them -- called by the
    command lines that train (``python -m glamd_core``, the training benchmarks) before torch starts.
    Nothing happens where the CPU has no AVX2 (runs are then keyed by this machine's kernels, with a
    warning) or where ``GLAMD_NATIVE_KERNELS=1`` asks for this machine's own kernels."""
    if os.environ.get(NATIVE_OPT_OUT, "").strip() not in ("", "0"):
        return
    at_start = settings_at_start()
    if all(at_start[k] == v for k, v in CANONICAL_ENV.items()):
        return
    if not cpu_supports_avx2():
        return
    if _start_environment() is None:  # no /proc: trust the environment only if torch has not started
        global _AT_IMPORT
        if "torch" in sys.modules:
            return
        os.environ.update(CANONICAL_ENV)
        _AT_IMPORT = dict(CANONICAL_ENV)
        return
    args = [sys.executable, *sys.orig_argv[1:]] if argv is None else argv
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, canonical_env())


def install_kernelspec(prefix: str | Path = sys.prefix) -> Path | None:
    """Give this environment's ``python3`` Jupyter kernel the canonical settings (its kernelspec's
    ``env``), so a notebook run by hand -- papermill, JupyterLab, a kernel the user starts -- trains
    the canonical runs. Nothing is written where the CPU has no AVX2 (the settings would not hold);
    returns the kernelspec file written, else None. ``make install`` calls it."""
    import json

    path = Path(prefix) / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    if not cpu_supports_avx2():
        return None
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no python3 kernelspec in this environment (is ipykernel installed?)")
    spec = json.loads(path.read_text())
    spec["env"] = {**spec.get("env", {}), **CANONICAL_ENV}
    path.write_text(json.dumps(spec, indent=1) + "\n")
    return path


if __name__ == "__main__":  # `make install`; `python -m glamd_core kernels` prints a process's kernels
    import argparse

    parser = argparse.ArgumentParser(prog="python -m glamd_core.kernels", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["kernelspec"],
                        help="give this environment's python3 Jupyter kernel the canonical settings")
    parser.parse_args()
    written = install_kernelspec()
    print(f"canonical kernel settings added to {written}" if written else
          "this CPU has no AVX2: the python3 kernel keeps the machine's own kernels (runs are keyed by them)")
