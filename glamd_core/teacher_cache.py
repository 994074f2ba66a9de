"""Teacher-output cache: a frozen teacher's FPN maps and dense head outputs, computed once.

In a distilled run the teacher is frozen and in eval mode, and the only augmentation is a
horizontal flip, so what the losses read from it is a pure function of the teacher's weights and
the transformed input image. Computing it once per training image and flip state, and reading it
back in every epoch of every distilled run that shares the teacher, removes the teacher's forward
pass (most of a distilled step's extra cost) from training.

An entry is keyed by a hash of the *exact* input tensor the detector's transform produces for one
image (normalised, resized, padded), so the image, its flip state and the image transform are all
part of the key by construction; a batch whose inputs are not all cached -- a different transform,
a padding that depends on the batch, a multi-scale schedule -- runs the teacher online instead,
so the cache can change speed but never results. One cache belongs to one teacher: it records a
fingerprint of the teacher's weights and :class:`glamd_core.distill.Distiller` refuses a cache made
for another. A build writes every entry atomically and a ``complete.json`` marker last; only a
completed cache is ever opened, and an interrupted build is resumed, not trusted.

Stored per entry, float32, one small torch file: the FPN maps (``features``, level order) and the
teacher's dense head outputs -- RetinaNet ``cls_logits`` / ``bbox_regression`` (anchors x K / 4),
Faster R-CNN RPN ``objectness`` / ``deltas`` per level. RoI-head terms are computed on the
student's RoIs, so they run the teacher's box head on the cached FPN maps.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from tqdm.auto import tqdm

from .files import atomic_write_text

MARKER = "complete.json"


def fingerprint(model: nn.Module) -> str:
    """A hash of every tensor in ``model``'s state dict (names, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=12)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (BN counters) too
        h.update(f"{name}:{tuple(tensor.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def input_key(image: torch.Tensor) -> str:
    """The key of one transformed (normalised, resized, padded) C x H x W input."""
    t = image.detach().cpu().contiguous()
    h = hashlib.blake2b(f"{tuple(t.shape)}:{t.dtype}".encode(), digest_size=16)
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@dataclass
class TeacherOutputs:
    """What the distillation losses read from the teacher for one batch."""

    features: "OrderedDict[str, torch.Tensor]"  # FPN maps, B x C x H x W per level
    dense: dict | None = None  # head outputs (see module docstring); None until asked for


def run_teacher(teacher: nn.Module, batch: torch.Tensor, with_dense: bool = True) -> TeacherOutputs:
    """The teacher's FPN maps (and dense head outputs) on a transformed batch, without gradients."""
    with torch.no_grad():
        features = teacher.backbone(batch)
        out = TeacherOutputs(features)
        if with_dense:
            out.dense = dense_outputs(teacher, features)
    return out


def dense_outputs(teacher: nn.Module, features) -> dict:
    levels = list(features.values())
    with torch.no_grad():
        if isinstance(teacher, RetinaNet):
            return dict(teacher.head(levels))
        objectness, deltas = teacher.rpn.head(levels)
        return {"objectness": objectness, "deltas": deltas}


def _split(out: TeacherOutputs) -> list[dict]:
    """Per-image entries of a batch's outputs."""
    entries = []
    for i in range(next(iter(out.features.values())).shape[0]):
        dense = {k: ([x[i].clone() for x in v] if isinstance(v, (list, tuple)) else v[i].clone())
                 for k, v in out.dense.items()}
        entries.append({"features": [f[i].clone() for f in out.features.values()], "dense": dense})
    return entries


def _stack(entries: list[dict], names: list[str], device) -> TeacherOutputs:
    features = OrderedDict((n, torch.stack([e["features"][j] for e in entries]).to(device))
                           for j, n in enumerate(names))
    dense = {}
    for k, v in entries[0]["dense"].items():
        if isinstance(v, list):
            dense[k] = [torch.stack([e["dense"][k][j] for e in entries]).to(device) for j in range(len(v))]
        else:
            dense[k] = torch.stack([e["dense"][k] for e in entries]).to(device)
    return TeacherOutputs(features, dense)


class TeacherCache:
    """A completed cache folder; :meth:`lookup` serves whole batches or nothing."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        marker = self.folder / MARKER
        if not marker.is_file():
            raise FileNotFoundError(f"{self.folder} is not a completed teacher cache (no {MARKER}: its build "
                                    "was interrupted or never ran); build it with build_teacher_cache")
        info = json.loads(marker.read_text())
        self.teacher_fingerprint: str = info["teacher_fingerprint"]
        self.level_names: list[str] = info["level_names"]
        self.entries: int = info["entries"]
        self.bytes: int = info["bytes"]
        self.hits = self.misses = 0

    def lookup(self, batch: torch.Tensor) -> TeacherOutputs | None:
        """The cached outputs of a transformed batch (B x 3 x H x W), or None unless every image is cached."""
        paths = [self.folder / f"{input_key(image)}.pt" for image in batch]
        if not all(p.is_file() for p in paths):
            self.misses += 1
            return None
        self.hits += 1
        return _stack([torch.load(p, weights_only=True) for p in paths], self.level_names, batch.device)


def build_teacher_cache(teacher: nn.Module, images, folder: str | Path, batch_size: int = 8,
                        progress: bool = True) -> TeacherCache:
    """Cache ``teacher``'s outputs for every image of ``images`` (float C x H x W tensors in [0, 1],
    as the training transform makes them) and its horizontal flip, through the teacher's own
    transform. Resumes an interrupted build; returns the completed cache."""
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return TeacherCache(folder)
    folder.mkdir(parents=True, exist_ok=True)
    teacher = teacher.eval()
    teacher_fingerprint = fingerprint(teacher)
    device = next(teacher.parameters()).device
    names = None
    inputs = [(i, flip) for i in range(len(images)) for flip in (False, True)]
    for start in tqdm(range(0, len(inputs), batch_size), desc="teacher cache", disable=not progress, leave=False):
        chunk = inputs[start:start + batch_size]
        batch = [images[i].flip(-1) if flip else images[i] for i, flip in chunk]
        with torch.no_grad():
            image_list, _ = teacher.transform([b.to(device) for b in batch])
        out = run_teacher(teacher, image_list.tensors)
        names = list(out.features)
        for image, entry in zip(image_list.tensors, _split(out)):
            path = folder / f"{input_key(image)}.pt"
            if not path.is_file():
                tmp = folder / f".{path.name}.partial"
                torch.save(entry, tmp)
                os.replace(tmp, path)
    if names is None:
        raise ValueError("no images to cache the teacher's outputs for")
    entries = sorted(folder.glob("*.pt"))
    info = {"teacher_fingerprint": teacher_fingerprint, "level_names": names, "entries": len(entries),
            "bytes": sum(p.stat().st_size for p in entries), "images": len(images), "flips": [False, True]}
    atomic_write_text(folder / MARKER, json.dumps(info, indent=2))
    return TeacherCache(folder)
