"""A run's identity: everything its weights depend on, hashed into the key that names its folder.

A run is ``<kind>-<backbone>[-<method>]-s<seed>-<key>``, the key a hash of its config. The config
covers: what is trained (a detector alone, a student distilled from a named teacher run, or an
imported checkpoint by its content), the detector's settings, the training settings (the seed
among them; not what leaves the weights unchanged: progress bars, gradient-norm logging), the
dataset (a synthetic set by the fingerprint of its content, real data by layout -- not by where it
is mounted), the CPU kernels the process runs (``kernels.kernel_key``: canonical AVX2, or what they
are), the ImageNet weights a backbone starts from, and the distillation settings as they resolve. Settings added after runs were cached are
keyed only when they differ from the value those runs had (``TRAIN_KEYED_WHEN_CHANGED``,
``distill.KEYED_WHEN_CHANGED``), so old keys stay valid -- the torch thread count among them: CPU
float sums depend on it, one thread is canonical and unkeyed, any other count is keyed. What the
weights also depend on but the key does not cover (the CPU's vector kernels, the image libraries) is
recorded beside each run (:func:`unkeyed_environment`): the library versions, the CPU, and the
kernels' settings in full.

The key covers the configuration, not the code: each run records the commit that trained it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from .data.real import RealData
from .data.synthetic import fingerprint
from .detectors import TWO_STAGE_KINDS
from .distill import KEYED_WHEN_CHANGED, NOT_KEYED, DistillConfig
from .engine import CHECKPOINT, TRAIN_KEYED_WHEN_CHANGED
from .files import REPO_ROOT, env_path
from .kernels import kernel_key
from .profiles import Profile


def unkeyed_environment() -> dict:
    """What a CPU run's weights depend on, recorded beside every run and results folder: the kernels
    in full (:func:`kernels.state`; the key names them in short), the CPU, and the library versions --
    torch and torchvision, pinned; numpy and Pillow, which draw and encode the synthetic images (a
    dataset they draw otherwise has another fingerprint, so another key)."""
    import platform

    import numpy
    import PIL
    import torch
    import torchvision

    from .kernels import state

    model = platform.processor()
    try:
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), model)
    except OSError:
        pass
    return {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "kernels": state(), "cpu_model": model,
            "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "pillow": PIL.__version__}


def backbone_weights(backbone: str) -> Path:
    """The local ImageNet checkpoint of timm ``backbone`` for profiles with ``pretrained_backbones``:
    ``$GLAMD_WEIGHTS/<backbone>.safetensors`` (or ``.pth`` / ``.bin``), default folder ``weights/``.
    Nothing is downloaded; a missing file is an error saying what to put where."""
    folder = env_path("GLAMD_WEIGHTS", REPO_ROOT / "weights")
    candidates = [folder / f"{backbone}{ext}" for ext in (".safetensors", ".pth", ".bin")]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"ImageNet weights for the timm backbone {backbone!r} not found (looked for {', '.join(map(str, candidates))}). "
        f"This machine cannot download them: fetch the timm model '{backbone}' (its model.safetensors on the "
        f"Hugging Face hub, e.g. timm/{backbone}.*) elsewhere and save it as {candidates[0]}, or point the "
        "environment variable GLAMD_WEIGHTS at the folder holding <backbone>.safetensors files.")


def data_key(profile: Profile, root: Path) -> str:
    """The dataset as run keys know it: a synthetic set by the fingerprint of its content (annotations
    and image bytes, :func:`data.synthetic.fingerprint`: another Pillow that encodes other JPEG bytes
    gives other keys, not silently other weights), real data by layout and splits -- not by where it
    is mounted, so a run trained on another machine's copy (a teacher from a cluster) is the same run
    here."""
    if isinstance(profile.data, RealData):
        return f"{profile.data.layout} " + json.dumps(profile.data.splits, sort_keys=True)
    return f"synthetic sha256:{fingerprint(root)}"


def imported_run(kind: str, backbone: str, profile: Profile, checkpoint: str | Path, root: Path) -> tuple[str, dict]:
    """A teacher trained elsewhere: keyed by its checkpoint's content."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"teacher checkpoint {checkpoint} not found (an engine checkpoint such as a run's "
                                f"{CHECKPOINT}, or a bare state dict of a build_detector('{kind}', '{backbone}', ...))")
    digest = hashlib.sha256()
    with open(checkpoint, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    config = {"what": "imported", "kind": kind, "backbone": backbone, "checkpoint_sha256": digest.hexdigest(),
              "detector": profile.detector, "data": data_key(profile, root), "kernels": kernel_key()}
    return f"{kind}-{backbone}-imported", config


def keyed_settings(profile: Profile, seed: int, root: Path, backbone: str) -> dict:
    """What every trained run's key covers besides its own fields (the seed and the thread count
    through "train"). The ImageNet weights a backbone starts from are keyed by file name and size
    (hashing them at every lookup would cost seconds)."""
    cfg = profile.with_train(seed=seed).train
    train = {k: v for k, v in asdict(cfg).items() if not (k in TRAIN_KEYED_WHEN_CHANGED and v == TRAIN_KEYED_WHEN_CHANGED[k])}
    keyed = {"detector": profile.detector, "train": train | {"progress": None, "grad_norm_every": None},
             "data": data_key(profile, root), "kernels": kernel_key()}
    if profile.pretrained_backbones:  # absent otherwise: cpu keys as before
        weights = backbone_weights(backbone)
        keyed["pretrained_backbone"] = f"{weights.name} {weights.stat().st_size} bytes"
    return keyed


def _init(init_run: str | None) -> dict:
    """A warm start is keyed by the run it starts from (absent otherwise: earlier keys unchanged)."""
    return {} if init_run is None else {"init_run": init_run}


def detector_run(kind: str, backbone: str, profile: Profile, seed: int, root: Path,
                 init_run: str | None = None) -> tuple[str, dict]:
    """A plain detector run's name and keyed config (``init_run``: the run whose weights it starts from)."""
    config = ({"what": "detector", "kind": kind, "backbone": backbone} | keyed_settings(profile, seed, root, backbone)
              | _init(init_run))
    return f"{kind}-{backbone}-s{seed}", config


def distilled_run(kind: str, student_backbone: str, profile: Profile, distill: DistillConfig, seed: int,
                  root: Path, teacher_run_dir: str, init_run: str | None = None) -> tuple[str, dict]:
    """A distilled student's name and keyed config: its teacher by run name (itself a key), the
    distillation settings as they resolve (``DistillConfig()`` and the same values spelled out are one run)."""
    resolved = distill.resolved(two_stage=kind in TWO_STAGE_KINDS)
    keyed = {k: v for k, v in asdict(resolved).items()
             if k not in NOT_KEYED and not (k in KEYED_WHEN_CHANGED and v == KEYED_WHEN_CHANGED[k])}
    config = {"what": "distilled", "kind": kind, "backbone": student_backbone, "teacher_run": teacher_run_dir,
              "distill": keyed} | keyed_settings(profile, seed, root, student_backbone) | _init(init_run)
    return f"{kind}-{student_backbone}-{distill.method}-s{seed}", config
