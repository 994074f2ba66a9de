"""Teacher-output cache: served outputs equal the online teacher's, runs reach the same AP, a cache
is never served to another teacher, and a half-built cache is never read.
(``pytest -k teacher_cache`` selects these.)"""

import signal
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

from glamd_core import runs
from glamd_core.distill import DistillConfig, Distiller
from glamd_core.profiles import get_profile
from glamd_core.teacher_cache import MARKER, TeacherCache, build_teacher_cache, input_key

from test_distill import _pair

REPO = Path(__file__).resolve().parents[1]
# float32, same batch size in the build and in training: the cached maps are the online ones up to
# the order of floating-point sums in batched convolutions. Measured here: equal to the bit.
RTOL = 1e-5


def _images(n=3, size=64):
    g = torch.Generator().manual_seed(5)
    return [torch.rand(3, size, size, generator=g) for _ in range(n)]


def _targets(n):
    boxes = [torch.tensor([[4.0, 6.0, 30.0, 40.0]]), torch.tensor([[20.0, 10.0, 60.0, 50.0]]), torch.zeros(0, 4)]
    labels = [torch.tensor([2]), torch.tensor([1]), torch.zeros(0, dtype=torch.int64)]
    return [{"boxes": boxes[i % 3], "labels": labels[i % 3]} for i in range(n)]


def _losses(distiller, images, targets):
    torch.manual_seed(7)  # same RPN / RoI sampling for both forwards
    out = distiller(images, targets)
    return {k: v.detach() for k, v in out.items() if k.startswith("distill")}


@pytest.mark.parametrize("kind, method", [("retinanet", "glamd"), ("faster_rcnn", "glamd"),
                                          ("faster_rcnn", "defeat"), ("retinanet", "global")])
def test_teacher_cache_losses_equal_the_online_teachers(kind, method, tmp_path):
    teacher, student = _pair(kind)
    images = _images()
    cache = build_teacher_cache(teacher, images, tmp_path / "cache", batch_size=2, progress=False)
    assert cache.entries == 2 * len(images)
    online = Distiller(teacher, student, DistillConfig(method=method)).train()
    cached = Distiller(teacher, student, DistillConfig(method=method), teacher_cache=cache).train()
    cached.adapters.load_state_dict(online.adapters.state_dict())
    batch = [images[0].flip(-1), images[2]]  # one flipped, one not, in a batch the build never saw
    expected = _losses(online, batch, _targets(2))
    got = _losses(cached, batch, _targets(2))
    assert cache.hits == 1 and cache.misses == 0
    assert expected.keys() == got.keys() and expected
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=RTOL, atol=0.0)


def test_teacher_cache_serves_whole_batches_or_runs_the_teacher(tmp_path):
    teacher, student = _pair("retinanet")
    images = _images()
    cache = build_teacher_cache(teacher, images[:2], tmp_path / "cache", progress=False)
    online = Distiller(teacher, student, DistillConfig()).train()
    cached = Distiller(teacher, student, DistillConfig(), teacher_cache=cache).train()
    cached.adapters.load_state_dict(online.adapters.state_dict())
    batch = [images[0], images[2]]  # images[2] was never cached
    expected, got = _losses(online, batch, _targets(2)), _losses(cached, batch, _targets(2))
    assert cache.hits == 0 and cache.misses == 1
    for k in expected:
        assert torch.equal(got[k], expected[k])


def test_teacher_cache_is_never_served_to_another_teacher(tmp_path):
    teacher, student = _pair("retinanet")
    cache = build_teacher_cache(teacher, _images(1), tmp_path / "cache", progress=False)
    other, _ = _pair("retinanet")
    with torch.no_grad():
        next(other.parameters()).add_(1e-3)  # same architecture, other weights
    with pytest.raises(ValueError, match="built for another teacher"):
        Distiller(other, student, DistillConfig(), teacher_cache=cache)
    Distiller(teacher, student, DistillConfig(), teacher_cache=cache)  # its own teacher: fine


def test_teacher_cache_entries_are_keyed_by_the_exact_input():
    image = torch.rand(3, 8, 8)
    assert input_key(image) == input_key(image.clone())
    assert input_key(image) != input_key(image.flip(-1))
    assert input_key(image) != input_key(image.reshape(3, 4, 16))  # same bytes, another shape
    nudged = image.clone()
    nudged[0, 0, 0] = torch.nextafter(nudged[0, 0, 0], torch.tensor(2.0))
    assert input_key(image) != input_key(nudged)


_BUILD_CHILD = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from test_distill import _pair
from test_teacher_cache import _images
from glamd_core import teacher_cache
torch.set_num_threads({threads})  # the parent's count: another count sums in another order (and an
# earlier test's dask cluster may have left OMP_NUM_THREADS=1 in the environment we inherit)
teacher, _ = _pair("retinanet")
calls = []
original = os.replace
def replace_then_die(src, dst):
    original(src, dst)
    calls.append(dst)
    if len(calls) == 3:  # three entries written, the build half done
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die  # files.atomic_save renames through os.replace
teacher_cache.build_teacher_cache(teacher, _images(), sys.argv[1], batch_size=2, progress=False)
"""


def test_teacher_cache_half_built_is_never_read(tmp_path):
    folder = tmp_path / "cache"
    child = subprocess.run([sys.executable, "-c", _BUILD_CHILD.format(tests=str(REPO / "tests"), threads=torch.get_num_threads()), str(folder)],
                           cwd=REPO, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(list(folder.glob("*.pt"))) == 3 and not (folder / MARKER).exists()
    with pytest.raises(FileNotFoundError, match="interrupted"):
        TeacherCache(folder)
    teacher, _ = _pair("retinanet")
    cache = build_teacher_cache(teacher, _images(), folder, batch_size=2, progress=False)  # resumes
    assert cache.entries == 6 and (folder / MARKER).exists()
    fresh = build_teacher_cache(teacher, _images(), tmp_path / "fresh", batch_size=2, progress=False)
    for p in sorted(fresh.folder.glob("*.pt")):
        a, b = torch.load(p), torch.load(folder / p.name)
        for x, y in zip(a["features"], b["features"]):
            assert torch.equal(x, y)


def test_teacher_cache_switch_is_not_part_of_a_runs_key(tmp_path):
    profile = get_profile("smoke")
    where = {flag: runs.run_dir_of("retinanet", profile.student_backbone, profile, 0, tmp_path,
                                   distill=DistillConfig(teacher_cache=flag), teacher_backbone=profile.teacher_backbone,
                                   data_dir=tmp_path / "data")
             for flag in (True, False)}
    assert where[True] == where[False]
    assert "teacher_cache" in asdict(DistillConfig())


@pytest.mark.parametrize("kind", ["retinanet", "faster_rcnn"])
def test_teacher_cache_smoke_run_reaches_the_same_ap(tmp_path, kind):
    """A distilled smoke run with the cache and one without, same seed, separate run caches."""
    profile = replace(get_profile("smoke"), teacher_backbone="resnet10t")
    results = {}
    for flag in (True, False):
        results[flag] = runs.train_distilled(kind, profile.teacher_backbone, profile.student_backbone, profile,
                                             DistillConfig(teacher_cache=flag), runs_dir=tmp_path / f"runs-{flag}",
                                             data_dir=tmp_path / "data")
    assert results[True]["teacher_cache_batches"] == {"cached": 4, "online": 0, "entries_repaired": 0}  # 16 images / batch 4, 1 epoch
    assert "teacher_cache_batches" not in results[False]
    assert results[True]["run_dir"] == results[False]["run_dir"]
    assert results[True]["metrics"] == results[False]["metrics"]
    assert results[True]["final_loss"] == results[False]["final_loss"]
