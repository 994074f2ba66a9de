"""The front page and the docs: the distillation example runs as written (paths and schedule shrunk to
smoke size), every relative link resolves, and the README stays a page read in a minute."""

import re
from pathlib import Path

import torch

from glamd_core.detectors import build_detector

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
EXAMPLE = REPO / "docs" / "distil.md"


def _example() -> str:
    text = EXAMPLE.read_text()
    return re.search(r"<!-- example: distill -->\n```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_distillation_example_runs(synthetic_root, tmp_path, monkeypatch):
    code = _example()
    assert len(code.strip().splitlines()) <= 14  # "about ten lines"
    teacher = build_detector("retinanet", "resnet34", 10, image_size=128, max_size=128)
    torch.save(teacher.state_dict(), tmp_path / "teacher.pt")
    monkeypatch.chdir(tmp_path)
    small = (code.replace('"data/synthetic"', repr(str(synthetic_root)))
             .replace("TrainConfig(epochs=12, batch_size=8)", "TrainConfig(epochs=1, batch_size=4, progress=False)"))
    assert small.count(str(synthetic_root)) == 1 and "epochs=1" in small  # both substitutions happened
    namespace = {}
    exec(compile(small, "README example", "exec"), namespace)
    assert (tmp_path / "my_runs" / "glamd-student" / "metrics.csv").exists()
    det = namespace["detections"][0]
    assert set(det) == {"boxes", "scores", "labels"} and not namespace["student"].training


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for page in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert not broken, broken


def test_the_readme_is_a_front_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 150
    assert text.index("results/verdicts.png") < text.index("## Two commands")  # the forest plot at the top
    assert "../shared" not in text
