"""Notebook parameters are checked by one function before any run is planned (issue #28)."""

import ast
import json
from pathlib import Path

import pytest

from glamd_core.parameters import RULES, ParameterError, check_parameters

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("given, named", [
    ({"seeds": []}, "seeds = []"),
    ({"seeds": 0}, "seeds = 0"),
    ({"seeds": [0, 0]}, "distinct"),
    ({"seeds": ["0", 1]}, "seeds[0] = '0'"),
    ({"sweep_seeds": [1.0]}, "sweep_seeds[0] = 1.0"),
    ({"patch_sizes": [2.9, 7]}, "patch_sizes[0] = 2.9"),
    ({"patch_sizes": [0]}, "patch_sizes[0] = 0"),
    ({"single_terms_without_glam": "no"}, "single_terms_without_glam = 'no'"),
    ({"confirm": "3"}, "confirm = '3'"),
    ({"confirm": -1}, "confirm = -1"),
    ({"n_images": "14"}, "n_images = '14'"),
    ({"workers": 0}, "workers = 0"),
    ({"kinds": ["ssd"]}, "kinds[0] = 'ssd'"),
    ({"kinds": []}, "kinds = []"),
    ({"kind": "yolo"}, "kind = 'yolo'"),
    ({"profile": "gpu"}, "profile = 'gpu'"),
    ({"weight_multipliers": [0.5, float("nan")]}, "weight_multipliers[1] = nan"),
    ({"temperature_multipliers": [-1.0]}, "temperature_multipliers[0] = -1.0"),
    ({"temperature": 0}, "temperature = 0"),
    ({"patch_size": True}, "patch_size = True"),
    ({"grid": [("fancy", 1.0)]}, "grid[0] = ('fancy', 1.0)"),
    ({"data_root": "/no/such/folder"}, "an existing folder"),
    ({"tolerance_share": 10}, "tolerance_share = 10"),
])
def test_a_bad_parameter_is_named_with_its_value(given, named):
    with pytest.raises(ParameterError, match=None) as error:
        check_parameters(**given)
    assert named in str(error.value) and "notebook parameter" in str(error.value)


def test_good_parameters_pass_as_given():
    good = dict(profile="smoke", seeds=[0, 2], sweep_seeds=None, kinds=["retinanet"], patch_sizes=[2, 7],
                single_terms_without_glam=False, confirm=0, n_images=3, workers=None, grid=[("reference", 1.0)],
                temperature=0.5)
    assert check_parameters(**good) == good | {"temperature": 0.5}
    with pytest.raises(TypeError, match="no rule"):
        check_parameters(colour="red")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_checks_every_parameter_right_after_its_parameters_cell(path):
    cells = json.loads(path.read_text())["cells"]
    at = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    names = [t.id for node in ast.parse("".join(cells[at]["source"])).body if isinstance(node, ast.Assign)
             for t in node.targets]
    call = next(node for node in ast.walk(ast.parse("".join(cells[at + 1]["source"])))
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "check_parameters")
    assert [k.arg for k in call.keywords] == names
    assert set(names) <= set(RULES)


def test_a_bad_parameter_stops_the_notebook_before_any_run(tmp_path, monkeypatch):
    import papermill

    monkeypatch.setenv("GLAMD_RUNS_DIR", str(tmp_path / "runs"))
    with pytest.raises(papermill.PapermillExecutionError, match="single_terms_without_glam = 'no'"):
        papermill.execute_notebook(str(NOTEBOOKS[5]), str(tmp_path / "out.ipynb"), kernel_name="python3",
                                   parameters={"profile": "smoke", "single_terms_without_glam": "no"},
                                   progress_bar=False, cwd=str(NOTEBOOKS[5].parents[1]))
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing planned
