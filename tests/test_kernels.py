"""Canonical kernels: which processes are canonical, and that run keys name the kernels."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from glamd_core import kernels
from glamd_core.files import REPO_ROOT

needs_avx2 = pytest.mark.skipif(not kernels.cpu_supports_avx2(), reason="this CPU has no AVX2")

PROBE = ("import json, os; {pre}from glamd_core import kernels; import torch; "
         "print(json.dumps([kernels.state(), kernels.kernel_key()]))")


def _probe(env_extra: dict | None = None, drop=(), pre: str = "") -> tuple[dict, str]:
    import os

    env = {k: v for k, v in os.environ.items() if k not in kernels.CANONICAL_ENV and k not in drop}
    env |= env_extra or {}
    out = subprocess.run([sys.executable, "-c", PROBE.format(pre=pre)], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, check=True)
    return tuple(json.loads(out.stdout.strip().splitlines()[-1]))


@needs_avx2
def test_a_process_started_with_the_three_settings_is_canonical():
    state, key = _probe(kernels.CANONICAL_ENV)
    assert state["canonical"] and state["aten_capability"] == "AVX2"
    assert key == kernels.CANONICAL_KEY


@needs_avx2
@pytest.mark.parametrize("missing", sorted(kernels.CANONICAL_ENV))
def test_two_settings_of_three_are_not_canonical(missing):
    state, key = _probe({k: v for k, v in kernels.CANONICAL_ENV.items() if k != missing})
    assert not state["canonical"]
    assert key != kernels.CANONICAL_KEY


def test_settings_made_after_the_process_started_are_not_canonical():
    """torch may already have read the settings: the run must not be keyed as canonical."""
    env = json.dumps(kernels.CANONICAL_ENV)
    state, key = _probe(pre=f"os.environ.update(json.loads({env!r})); ")
    assert not state["canonical"]
    assert state["changed_after_start"] == kernels.CANONICAL_ENV
    assert key != kernels.CANONICAL_KEY


def test_importing_the_library_changes_nothing_in_the_callers_process():
    state, key = _probe()
    assert state["aten_cpu_capability_env"] is None and not state["canonical"]
    assert "native" in key


@needs_avx2
def test_the_command_line_restarts_itself_canonically():
    import os

    env = {k: v for k, v in os.environ.items() if k not in kernels.CANONICAL_ENV}
    env.pop(kernels.NATIVE_OPT_OUT, None)
    out = subprocess.run([sys.executable, "-m", "glamd_core", "kernels"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["canonical"] is True
    out = subprocess.run([sys.executable, "-m", "glamd_core", "kernels"], cwd=REPO_ROOT,
                         env=env | {kernels.NATIVE_OPT_OUT: "1"}, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["canonical"] is False


def test_run_keys_differ_by_kernels(monkeypatch, tmp_path):
    """The same experiment in a canonical and a non-canonical process: two runs, two folders."""
    from glamd_core import run_key
    from glamd_core.experiments import Experiment, run_dir

    exp = Experiment("retinanet", "none", "smoke")
    monkeypatch.setattr(run_key, "kernel_key", lambda: kernels.CANONICAL_KEY)
    canonical = run_dir(exp, runs_dir=tmp_path, data_dir=tmp_path)
    monkeypatch.setattr(run_key, "kernel_key", lambda: "aten=AVX512 onednn=native mkl_cbwr=native")
    native = run_dir(exp, runs_dir=tmp_path, data_dir=tmp_path)
    assert canonical != native
    assert canonical.name.rsplit("-", 1)[0] == native.name.rsplit("-", 1)[0]


def test_the_synthetic_dataset_is_keyed_by_its_content(monkeypatch, tmp_path):
    """Other image bytes under the same spec and folder (another Pillow's encoder): another key."""
    from glamd_core.data import synthetic
    from glamd_core.experiments import Experiment, run_dir
    from glamd_core.data.splits import dataset_root
    from glamd_core.profiles import get_profile

    exp = Experiment("retinanet", "none", "smoke")
    before = run_dir(exp, runs_dir=tmp_path, data_dir=tmp_path)
    root = dataset_root(get_profile("smoke"), data_dir=tmp_path)
    assert json.loads((root / synthetic.FINGERPRINT_FILE).read_text())["sha256"] == synthetic.content_sha256(root)
    image = sorted((root / "JPEGImages").iterdir())[0]
    image.write_bytes(image.read_bytes() + b"\0")  # one byte more: what another encoder might write
    (root / synthetic.FINGERPRINT_FILE).unlink()  # as if generated here with those bytes
    after = run_dir(exp, runs_dir=tmp_path, data_dir=tmp_path)
    assert before.parent == after.parent and before != after


@needs_avx2
def test_the_environments_python3_kernel_gets_the_canonical_settings(tmp_path):
    """A notebook run by hand (papermill, JupyterLab) starts this kernelspec: it must start canonical."""
    spec = tmp_path / "share" / "jupyter" / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    spec.write_text(json.dumps({"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "Python 3 (ipykernel)", "language": "python", "env": {"X": "1"}}))
    assert kernels.install_kernelspec(tmp_path) == spec
    written = json.loads(spec.read_text())
    assert written["env"] == {"X": "1", **kernels.CANONICAL_ENV} and written["argv"][0] == "python"
    with pytest.raises(FileNotFoundError, match="no python3 kernelspec"):
        kernels.install_kernelspec(tmp_path / "elsewhere")


@needs_avx2
def test_a_notebook_run_by_hand_with_papermill_runs_canonically(tmp_path):
    import os

    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("from glamd_core import kernels\nprint(kernels.state()['canonical'])")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "probe.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in kernels.CANONICAL_ENV}
    kernels.install_kernelspec()  # what `make install` did
    done = subprocess.run([sys.executable, "-m", "papermill", str(tmp_path / "probe.ipynb"), str(tmp_path / "out.ipynb"),
                           "-k", "python3"], cwd=tmp_path, env=env | {"JUPYTER_PATH": ""}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[0].outputs[0]["text"].strip() == "True"
