"""Real datasets on disk (Pascal VOC, COCO 2017): where a profile finds them and which split plays
which role. Nothing here downloads: a missing dataset is an error naming the expected layout.

A root is taken, in this order, from the caller (``data_root=``, a notebook's ``data_root``
parameter, the CLI's ``--data-root``), from the dataset's environment variable, or from its folder
under ``data/``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from ..files import env_path
from .base import DetectionDataset
from .coco import COCODetection
from .voc import VOCDetection

VOC_LAYOUT = """\
{root}/
  VOC2007/  JPEGImages/  Annotations/  ImageSets/Main/trainval.txt, test.txt
  VOC2012/  JPEGImages/  Annotations/  ImageSets/Main/trainval.txt
(VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and VOCtrainval_11-May-2012.tar extracted
 there: each unpacks into VOCdevkit/VOC20xx)"""

COCO_LAYOUT = """\
{root}/
  annotations/instances_train2017.json, instances_val2017.json
  train2017/  val2017/   (the images)
(train2017.zip, val2017.zip and annotations_trainval2017.zip from the COCO site, extracted there)"""


@dataclass(frozen=True)
class RealData:
    """A real dataset: ``layout`` "voc" (splits named ``"VOC2007/trainval"``) or "coco" (splits
    named ``"train2017"``), and per role (``train``, ``val``, ``test``) the splits it reads --
    several are concatenated (VOC 07+12)."""

    layout: str
    splits: dict
    env: str  # the environment variable that may name the root
    folder: str  # the root's default place under data/

    def __post_init__(self):
        if self.layout not in ("voc", "coco"):
            raise ValueError(f"RealData.layout must be 'voc' or 'coco', got {self.layout!r}")
        if "train" not in self.splits:
            raise ValueError("RealData.splits needs a 'train' role")

    def root(self, data_root: str | Path | None = None, data_dir: str | Path = "data") -> Path:
        """Where the dataset is, without checking it (run keys need this before any file exists)."""
        return Path(data_root).expanduser() if data_root else env_path(self.env, Path(data_dir) / self.folder)

    def check(self, root: Path) -> None:
        """A clear error naming every missing file of the layout this profile reads."""
        missing = [str(p) for p in self._needed(root) if not p.exists()]
        if missing:
            layout = (VOC_LAYOUT if self.layout == "voc" else COCO_LAYOUT).format(root=root)
            raise FileNotFoundError(
                f"{self.layout.upper()} dataset not found at {root} (missing: {', '.join(missing[:4])}"
                f"{' ...' if len(missing) > 4 else ''}). This machine cannot download it. Expected layout:\n"
                f"{layout}\nPoint at it with data_root=... (notebooks: the data_root parameter; CLI: "
                f"--data-root) or the environment variable {self.env}.")

    def _needed(self, root: Path) -> list[Path]:
        out = []
        for names in self.splits.values():
            for name in names:
                if self.layout == "voc":
                    year, split = name.split("/")
                    out += [root / year / "Annotations", root / year / "JPEGImages",
                            root / year / "ImageSets" / "Main" / f"{split}.txt"]
                else:
                    out += [root / "annotations" / f"instances_{name}.json", root / name]
        return out

    def load(self, root: Path, role: str, transforms=None, skip_ignored: bool = False) -> DetectionDataset:
        """The dataset of one role (its splits concatenated)."""
        parts = []
        for name in self.splits[role]:
            if self.layout == "voc":
                year, split = name.split("/")
                parts.append(VOCDetection(root / year, split, transforms=transforms, skip_ignored=skip_ignored))
            else:
                parts.append(COCODetection(root / name, root / "annotations" / f"instances_{name}.json",
                                           transforms=transforms, skip_ignored=skip_ignored))
        return concat(parts) if len(parts) > 1 else parts[0]


def concat(datasets: list[DetectionDataset]) -> DetectionDataset:
    """One dataset of several with the same classes (VOC2007 + VOC2012 trainval); image ids
    renumbered so they stay unique."""
    first = datasets[0]
    for d in datasets[1:]:
        if d.classes != first.classes:
            raise ValueError(f"cannot concatenate {first.source} and {d.source}: their classes differ")
    records, offset = [], 0
    for d in datasets:
        records += [replace(r, image_id=offset + i) for i, r in enumerate(d.records)]
        offset += len(d.records)
    return DetectionDataset(records, first.classes, first.supercategories, first.transforms, first.skip_ignored,
                            " + ".join(d.source for d in datasets))
