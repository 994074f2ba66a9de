"""A profile's dataset: its folder (a synthetic set generated on first use) and the split playing each
role -- ``train``; ``val``, on which settings are chosen; ``test``, held out, which every table reports.

``profile`` below is a :class:`glamd_core.profiles.Profile`, read here (its ``data`` and ``train``), never
imported: profiles sit above the data."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..files import REPO_ROOT, config_key, exclusive
from .base import DetectionDataset
from .real import RealData
from .synthetic import ensure_dataset
from .transforms import eval_transforms
from .voc import VOCDetection

DATA_DIR = REPO_ROOT / "data"


def dataset_root(profile, data_root: str | Path | None = None, data_dir: Path = DATA_DIR,
                 generate: bool = True) -> Path:
    """The profile's dataset on disk: generated on first use for synthetic profiles (unless
    ``generate`` is false, which only names the folder); for real data (``paper_*`` profiles)
    ``data_root``, else the dataset's environment variable, else its folder under ``data_dir`` --
    checked, with an error naming the expected layout, unless ``generate`` is false."""
    if isinstance(profile.data, RealData):
        root = profile.data.root(data_root, data_dir)
        if generate:
            profile.data.check(root)
        return root
    spec = profile.data
    root = Path(data_dir) / f"synthetic-{config_key(asdict(spec))}"
    if not generate:
        return root
    with exclusive(root.parent / f".{root.name}.lock"):
        return ensure_dataset(root, spec, progress=profile.train.progress)


def keyed_root(profile, data_root: str | Path | None = None, data_dir: Path = DATA_DIR) -> Path:
    """The dataset folder a run key is computed from: a synthetic set generated on first use (its key
    is its content's fingerprint); real data only named, not checked (a plan may list paper runs on
    a machine without the data)."""
    return dataset_root(profile, data_root, data_dir, generate=not isinstance(profile.data, RealData))


def splits(profile) -> dict[str, str]:
    """The dataset split for each role: ``train``; ``val``, on which settings are chosen; ``test``,
    held out, which every table reports. The paper profiles' real data has no val split (VOC2007's
    labelled splits are trainval and test; COCO's test-dev has no public labels): their settings
    are the published ones. A role of several splits is named by them joined with ``+``."""
    if isinstance(profile.data, RealData):
        return {role: "+".join(names) for role, names in profile.data.splits.items()}
    return {"train": "train", "val": "val"} | ({"test": "test"} if profile.data.num_test else {})


def load_split(profile, root: Path, role: str, transforms=None, skip_ignored: bool = False) -> DetectionDataset:
    """The dataset playing ``role`` (``train`` / ``val`` / ``test``) in this profile."""
    if isinstance(profile.data, RealData):
        return profile.data.load(root, role, transforms, skip_ignored)
    return VOCDetection(root, splits(profile)[role], transforms=transforms, skip_ignored=skip_ignored)


def evaluation_splits(profile) -> list[str]:
    return [role for role in ("val", "test") if role in splits(profile)]


class TrainingImages:
    """A split's images as the training transform makes them before its random flip (float, [0, 1])."""

    def __init__(self, profile, root: Path):
        self.dataset = load_split(profile, root, "train", eval_transforms())

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i][0].as_subclass(torch.Tensor)
