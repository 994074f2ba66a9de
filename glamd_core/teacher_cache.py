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

Every entry also carries its own key and a checksum of its tensors, checked on every read. An entry
that cannot be read, fails its checksum or holds another input's outputs (a flipped bit, a torn or
misplaced file) is *repaired*, not trusted and not fatal: the batch runs the teacher online, the
entry is rewritten from that result, and a warning names the file. A marker that cannot be read
makes the cache incomplete, so it is rebuilt (resuming, keeping every entry that checks out).

Stored per entry, float32, one small torch file: the FPN maps (``features``, level order) and the
teacher's dense head outputs -- RetinaNet ``cls_logits`` / ``bbox_regression`` (anchors x K / 4),
Faster R-CNN RPN ``objectness`` / ``deltas`` per level. RoI-head terms are computed on the
student's RoIs, so they run the teacher's box head on the cached FPN maps.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import RetinaNet
from tqdm.auto import tqdm

from .files import atomic_save, atomic_write_text, config_key, exclusive

MARKER = "complete.json"
FORMAT = 2  # 2: entries carry their key and a checksum (1, before: bare outputs, never verified)


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


def _tensors(entry: dict):
    """An entry's tensors in a fixed order: the FPN maps, then the dense outputs by name."""
    yield from entry["features"]
    for name in sorted(entry["dense"]):
        value = entry["dense"][name]
        yield from (value if isinstance(value, (list, tuple)) else [value])


def _checksum(key: str, entry: dict) -> str:
    h = hashlib.blake2b(key.encode(), digest_size=16)
    for t in _tensors(entry):
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def write_entry(folder: Path, key: str, entry: dict) -> Path:
    """One image's outputs, written whole, with their key and checksum."""
    path = Path(folder) / f"{key}.pt"
    atomic_save({"format": FORMAT, "key": key, "checksum": _checksum(key, entry), "features": entry["features"],
                 "dense": entry["dense"]}, path)
    return path


def read_entry(path: Path) -> tuple[dict | None, str]:
    """``(entry, "")`` if the file at ``path`` is a whole entry of the input its name is the key of;
    else ``(None, why not)``."""
    try:
        data = torch.load(path, weights_only=True)
    except Exception as exc:  # truncated, empty or random bytes: torch fails with many error types
        return None, f"unreadable ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None, f"not a format-{FORMAT} cache entry"
    if data.get("key") != path.stem:
        return None, f"the entry of another input ({data.get('key')!r})"
    try:
        ok = _checksum(path.stem, data) == data.get("checksum")
    except Exception:  # a missing or mistyped field
        ok = False
    return (data, "") if ok else (None, "damaged: its content fails its checksum")


class UnreadableMarker(ValueError):
    """A cache's completion marker that is not JSON (a torn write): the cache counts as incomplete."""


class TeacherCache:
    """A completed cache folder; :meth:`lookup` serves whole batches or nothing."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        marker = self.folder / MARKER
        if not marker.is_file():
            raise FileNotFoundError(f"{self.folder} is not a completed teacher cache (no {MARKER}: its build "
                                    "was interrupted or never ran); build it with build_teacher_cache")
        try:
            info = json.loads(marker.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UnreadableMarker(f"{marker} cannot be read ({exc}); the cache is incomplete: delete the marker and "
                             "build_teacher_cache resumes the build") from exc
        if info.get("format") != FORMAT:
            raise ValueError(f"{self.folder} is a teacher cache of format {info.get('format', 1)}, not {FORMAT}; "
                             "build_teacher_cache rebuilds it")
        self.teacher_fingerprint: str = info["teacher_fingerprint"]
        self.level_names: list[str] = info["level_names"]
        self.entries: int = info["entries"]
        self.bytes: int = info["bytes"]
        self.hits = self.misses = self.repaired = 0

    @classmethod
    def open(cls, folder: str | Path) -> "TeacherCache | None":
        """The completed cache in ``folder``, or None when it must be (re)built: no marker, a marker
        that cannot be read (warned, then removed) or an older format."""
        marker = Path(folder) / MARKER
        if not marker.is_file():
            return None
        try:
            return cls(folder)
        except UnreadableMarker:
            warnings.warn(f"{marker} cannot be read (a torn write?): the teacher cache is rebuilt, keeping "
                          "the entries that check out", stacklevel=2)
        except ValueError:  # an older format: rebuilt silently, each old entry fails its check and is rewritten
            pass
        marker.unlink()
        return None

    def lookup(self, batch: torch.Tensor, recompute=None) -> TeacherOutputs | None:
        """The cached outputs of a transformed batch (B x 3 x H x W), or None unless every image is
        cached. A damaged entry is never served: with ``recompute`` (a callable giving the teacher's
        outputs on ``batch``, dense included) the batch is recomputed and the damaged entries are
        rewritten from it; without, the batch counts as not cached."""
        keys = [input_key(image) for image in batch]
        paths = [self.folder / f"{key}.pt" for key in keys]
        if not all(p.is_file() for p in paths):
            self.misses += 1
            return None
        read = [read_entry(p) for p in paths]
        damaged = [(i, why) for i, (entry, why) in enumerate(read) if entry is None]
        if not damaged:
            self.hits += 1
            return _stack([entry for entry, _ in read], self.level_names, batch.device)
        self.misses += 1
        for i, why in damaged:
            warnings.warn(f"teacher cache entry {paths[i]} is {why}; "
                          + ("recomputed from the teacher and rewritten" if recompute else "not used"), stacklevel=2)
        if recompute is None:
            return None
        out = recompute()
        entries = _split(out)
        for i, _ in damaged:
            write_entry(self.folder, keys[i], entries[i])
        self.repaired += len(damaged)
        return out


def build_teacher_cache(teacher: nn.Module, images, folder: str | Path, batch_size: int = 8,
                        progress: bool = True) -> TeacherCache:
    """Cache ``teacher``'s outputs for every image of ``images`` (float C x H x W tensors in [0, 1],
    as the training transform makes them) and its horizontal flip, through the teacher's own
    transform. Resumes an interrupted build; returns the completed cache."""
    folder = Path(folder)
    cache = TeacherCache.open(folder)
    if cache is not None:
        return cache
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
            key = input_key(image)
            if read_entry(folder / f"{key}.pt")[0] is None:  # missing, or left damaged by an earlier build
                write_entry(folder, key, entry)
    if names is None:
        raise ValueError("no images to cache the teacher's outputs for")
    entries = sorted(folder.glob("*.pt"))
    info = {"format": FORMAT, "teacher_fingerprint": teacher_fingerprint, "level_names": names, "entries": len(entries),
            "bytes": sum(p.stat().st_size for p in entries), "images": len(images), "flips": [False, True]}
    atomic_write_text(folder / MARKER, json.dumps(info, indent=2))
    return TeacherCache(folder)


def teacher_cache_of(teacher, teacher_dir: Path, split: str, data_key: str, images, batch_size: int,
                     progress: bool = False) -> TeacherCache:
    """The output cache of a trained ``teacher`` for one training split, built on first use (once, under
    a lock, however many distilled runs ask at once) in ``<teacher run>/teacher_cache/``, named by the
    dataset (``data_key``, as run keys name it), the split, the teacher's input transform and its
    weights. ``images()`` gives the split's images as the training transform makes them before its
    flip; it is only called when the cache is built."""
    t = teacher.transform
    transform = {"min_size": t.min_size, "max_size": t.max_size, "size_divisible": t.size_divisible,
                 "mean": t.image_mean, "std": t.image_std, "fixed_size": t.fixed_size}
    name = f"{split}-{config_key({'data': data_key, 'split': split, 'transform': transform})}"
    folder = Path(teacher_dir) / "teacher_cache" / f"{name}-{fingerprint(teacher)}"
    with exclusive(folder.parent / f".{folder.name}.lock"):
        cache = TeacherCache.open(folder)
        if cache is not None:
            return cache
        cache = build_teacher_cache(teacher, images(), folder, batch_size, progress=progress)
    print(f"teacher cache built: {cache.entries} entries (images x 2 flips), {cache.bytes / 2**20:.0f} MB in {folder}")
    return cache
