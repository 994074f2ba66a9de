"""The embedded default dataset: a seeded, procedurally drawn detection set.

No VOC/COCO download is possible here, so the default experiments run on images we draw
ourselves. The design serves the paper's analyses:

* 9 classes in 3 supercategories; the classes of one supercategory differ only by a detail
  (disk vs ring, square vs diamond, plus vs x-mark), so "similar-class" confusions (the Sim
  error of the error analysis) exist and differ from "other-class" confusions (Oth).
* object sizes from ~5% to ~80% of the image side, log-uniform, so COCO small / medium / large
  buckets are all populated and small objects -- where local attention should matter -- are common.
* clutter: textured background, stray strokes and blobs in object colours that are not objects.
* several objects per image, limited overlap, and some images with no object at all.

Each image is drawn from its own generator seeded by ``(seed, split, index)``, so the same
arguments always give identical annotations, whatever ``num_train`` is.

The output is real Pascal VOC layout plus COCO json for the same images, read back by
:class:`glamd_core.data.VOCDetection` and :class:`glamd_core.data.COCODetection`.

    python -m glamd_core.data.synthetic --out data/synthetic --num-train 800 --num-val 200
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter
from tqdm.auto import tqdm

# class name -> supercategory. Order defines label ids (1-based; 0 is background).
CLASSES: dict[str, str] = {
    "disk": "round",
    "ring": "round",
    "half_disk": "round",
    "square": "angular",
    "diamond": "angular",
    "triangle": "angular",
    "plus": "mark",
    "x_mark": "mark",
    "star": "mark",
}
CLASS_NAMES: tuple[str, ...] = tuple(CLASSES)

SPLIT_IDS = {"train": 0, "val": 1, "test": 2}  # per-image seeds (seed, split, index): splits never share an image


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines the dataset; written next to it as ``spec.json``."""

    num_train: int = 800
    num_val: int = 200
    num_test: int = 0  # held-out split: settings are chosen on val, results reported on test
    image_size: int = 128
    seed: int = 0
    max_objects: int = 6
    empty_fraction: float = 0.05
    min_size_frac: float = 0.05
    max_size_frac: float = 0.8
    max_overlap_iou: float = 0.3
    max_covered: float = 0.3  # a later object may hide at most this fraction of an earlier box
    jpeg_quality: int = 92
    # Objects differ from the background under them by at least this RGB distance: without it a
    # few percent of objects are invisible, which only adds label noise.
    min_contrast: float = 80.0
    noise_sigma: tuple[float, float] = (3.0, 10.0)
    clutter_count: tuple[int, int] = (1, 6)
    version: int = 2  # bump when the drawing code changes, so cached datasets are regenerated


def _regular_polygon(cx, cy, r, n, phase):
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n)) for k in range(n)]


def _draw_shape(draw: ImageDraw.ImageDraw, name: str, cx: float, cy: float, r: float, fill, rng) -> None:
    """Draw one object of class ``name`` with half-extent ``r`` centred at (cx, cy)."""
    jitter = rng.uniform(-0.15, 0.15)  # small rotation: classes must not be separable by exact angle
    if name == "disk":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif name == "ring":
        width = max(1, int(round(r * 0.35)))
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=fill, width=width)
    elif name == "half_disk":
        start = rng.choice([0, 90, 180, 270])
        draw.pieslice([cx - r, cy - r, cx + r, cy + r], start, start + 180, fill=fill)
    elif name == "square":
        draw.polygon(_regular_polygon(cx, cy, r * math.sqrt(2), 4, math.pi / 4 + jitter), fill=fill)
    elif name == "diamond":
        draw.polygon(_regular_polygon(cx, cy, r, 4, jitter), fill=fill)
    elif name == "triangle":
        draw.polygon(_regular_polygon(cx, cy, r, 3, -math.pi / 2 + jitter), fill=fill)
    elif name in ("plus", "x_mark"):
        phase = jitter + (math.pi / 4 if name == "x_mark" else 0.0)
        arm = max(1, int(round(r * 0.45)))
        for k in range(2):
            a = phase + k * math.pi / 2
            dx, dy = r * math.cos(a), r * math.sin(a)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=fill, width=arm)
    elif name == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -math.pi / 2 + jitter + math.pi * k / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    else:  # pragma: no cover - CLASSES is the single source of names
        raise ValueError(f"unknown synthetic class {name!r}")


def _background(rng: np.random.Generator, size: int, noise_sigma) -> Image.Image:
    """Smooth colour gradient + pixel noise: texture the detector must learn to ignore."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = rng.uniform(30, 200, 3), rng.uniform(30, 200, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0 * (1 - t) + c1 * t + rng.normal(0, rng.uniform(*noise_sigma), (size, size, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _clutter(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count) -> None:
    for _ in range(rng.integers(count[0], count[1] + 1)):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:  # stray stroke: object-coloured but not an object
            p = rng.uniform(0, size, 4)
            draw.line(list(p), fill=colour, width=int(rng.integers(1, 3)))
        else:  # small irregular blob
            cx, cy = rng.uniform(0, size, 2)
            r = rng.uniform(1, size * 0.04)
            pts = _regular_polygon(cx, cy, r, int(rng.integers(5, 9)), rng.uniform(0, 6.3))
            pts = [(x + rng.normal(0, r * 0.3), y + rng.normal(0, r * 0.3)) for x, y in pts]
            draw.polygon(pts, fill=colour)


def _too_occluding(new, old, max_iou: float, max_cover: float) -> bool:
    """Reject a new box that overlaps an earlier one too much, or paints over most of it."""
    ix = max(0.0, min(new[2], old[2]) - max(new[0], old[0]))
    iy = max(0.0, min(new[3], old[3]) - max(new[1], old[1]))
    inter = ix * iy
    area_new = (new[2] - new[0]) * (new[3] - new[1])
    area_old = (old[2] - old[0]) * (old[3] - old[1])
    return inter / (area_new + area_old - inter) > max_iou or inter / area_old > max_cover


def render_image(spec: SyntheticSpec, split: str, index: int) -> tuple[Image.Image, list[dict]]:
    """Draw image ``index`` of ``split``; return it and its objects (name, pixel box l,t,r,b exclusive)."""
    rng = np.random.default_rng([spec.seed, SPLIT_IDS[split], index])
    size = spec.image_size
    img = _background(rng, size, spec.noise_sigma)
    draw = ImageDraw.Draw(img)
    _clutter(draw, rng, size, spec.clutter_count)
    n_obj = 0 if rng.random() < spec.empty_fraction else int(rng.integers(1, spec.max_objects + 1))
    objects: list[dict] = []
    for _ in range(n_obj):
        for _attempt in range(20):
            name = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
            side = math.exp(rng.uniform(math.log(spec.min_size_frac * size), math.log(spec.max_size_frac * size)))
            r = side / 2
            cx, cy = rng.uniform(r, size - r, 2)
            # Exact tight box from the rasterised shape alone (not from geometry, which PIL rounds).
            mask = Image.new("L", (size, size), 0)
            _draw_shape(ImageDraw.Draw(mask), name, cx, cy, r, 255, np.random.default_rng(rng.integers(1 << 31)))
            box = mask.getbbox()
            if box is None or box[2] - box[0] < 2 or box[3] - box[1] < 2:
                continue
            if any(_too_occluding(box, o["box"], spec.max_overlap_iou, spec.max_covered) for o in objects):
                continue
            under = np.asarray(img)[np.asarray(mask) > 0].mean(axis=0)
            for _colour_try in range(20):
                colour = rng.integers(0, 256, 3)
                if np.linalg.norm(colour - under) >= spec.min_contrast:
                    break
            colour = tuple(int(v) for v in colour)
            img.paste(Image.new("RGB", (size, size), colour), (0, 0), mask)
            objects.append({"name": name, "box": tuple(int(v) for v in box)})
            break
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    return img, objects


def _voc_xml(filename: str, size: int, objects: list[dict]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    sz = ET.SubElement(root, "size")
    for tag, v in (("width", size), ("height", size), ("depth", 3)):
        ET.SubElement(sz, tag).text = str(v)
    for o in objects:
        ob = ET.SubElement(root, "object")
        ET.SubElement(ob, "name").text = o["name"]
        ET.SubElement(ob, "pose").text = "Unspecified"
        ET.SubElement(ob, "truncated").text = "0"
        ET.SubElement(ob, "difficult").text = "0"
        bb = ET.SubElement(ob, "bndbox")
        l, t, r, b = o["box"]
        # VOC boxes are 1-based inclusive pixel indices: pixel columns l..r-1 -> xmin=l+1, xmax=r.
        for tag, v in (("xmin", l + 1), ("ymin", t + 1), ("xmax", r), ("ymax", b)):
            ET.SubElement(bb, tag).text = str(v)
    ET.indent(root)
    return ET.ElementTree(root)


def generate(out: str | Path, spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Path:
    """Write the dataset in VOC layout and COCO json under ``out``; return ``out``."""
    out = Path(out)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "annotations"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": n, "supercategory": CLASSES[n]} for i, n in enumerate(CLASS_NAMES)]
    cat_id = {c["name"]: c["id"] for c in categories}
    image_id = 0
    for split, count in (("train", spec.num_train), ("val", spec.num_val), ("test", spec.num_test)):
        images, anns, stems = [], [], []
        for index in tqdm(range(count), desc=f"synthetic {split}", disable=not progress):
            image_id += 1
            stem = f"{split}_{index:06d}"
            img, objects = render_image(spec, split, index)
            img.save(out / "JPEGImages" / f"{stem}.jpg", quality=spec.jpeg_quality)
            _voc_xml(f"{stem}.jpg", spec.image_size, objects).write(out / "Annotations" / f"{stem}.xml")
            stems.append(stem)
            images.append({"id": image_id, "file_name": f"{stem}.jpg", "width": spec.image_size, "height": spec.image_size})
            for o in objects:
                l, t, r, b = o["box"]
                anns.append({
                    "id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[o["name"]],
                    "bbox": [l, t, r - l, b - t], "area": (r - l) * (b - t), "iscrowd": 0,
                })
        (out / "ImageSets/Main" / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        coco = {"images": images, "annotations": anns, "categories": categories}
        (out / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    # Not part of the VOC layout; the VOC loader uses it to learn the class list of this dataset.
    (out / "classes.txt").write_text("".join(n + "\n" for n in CLASS_NAMES))
    _write_fingerprint(out)
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=2))  # last: its presence means complete
    return out


FINGERPRINT_FILE = "fingerprint.json"
_CONTENT = ("JPEGImages", "Annotations", "ImageSets", "annotations", "classes.txt")


def content_sha256(root: str | Path) -> str:
    """sha256 over the dataset's content: every file's path (relative) and bytes, in path order --
    images, VOC and COCO annotations, split lists and the class list; not ``spec.json`` (how it was
    asked for) nor where the folder lies."""
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(p for name in _CONTENT for p in ([root / name] if (root / name).is_file()
                                                     else (root / name).rglob("*")) if p.is_file())
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _write_fingerprint(root: Path) -> str:
    value = content_sha256(root)
    tmp = root / f".{FINGERPRINT_FILE}.tmp"
    tmp.write_text(json.dumps({"sha256": value, "pillow": PIL.__version__, "numpy": np.__version__}, indent=2))
    tmp.replace(root / FINGERPRINT_FILE)
    return value


def fingerprint(root: str | Path) -> str:
    """The content fingerprint of the generated dataset at ``root`` (written when it was generated;
    computed and written now for a dataset generated before fingerprints existed). Run keys name the
    dataset by it, so the same spec drawn or encoded into other bytes -- another numpy or Pillow --
    is another dataset."""
    root = Path(root)
    if not (root / "spec.json").is_file():
        raise FileNotFoundError(f"{root} holds no finished synthetic dataset (no spec.json): generate it first "
                                "(data.splits.dataset_root does so on first use)")
    try:
        return json.loads((root / FINGERPRINT_FILE).read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return _write_fingerprint(root)


def ensure_dataset(out: str | Path, spec: SyntheticSpec = SyntheticSpec(), progress: bool = True) -> Path:
    """Generate ``out`` unless it already holds a dataset made from exactly ``spec``."""
    out = Path(out)
    spec_file = out / "spec.json"
    if spec_file.exists() and json.loads(spec_file.read_text()) == json.loads(json.dumps(asdict(spec))):
        return out
    if spec_file.exists():
        raise FileExistsError(
            f"{out} holds a synthetic dataset made with a different spec ({spec_file}); "
            "delete the folder or choose another path"
        )
    return generate(out, spec, progress)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (VOC layout + annotations/*.json)")
    p.add_argument("--num-train", type=int, default=SyntheticSpec.num_train)
    p.add_argument("--num-val", type=int, default=SyntheticSpec.num_val)
    p.add_argument("--num-test", type=int, default=SyntheticSpec.num_test)
    p.add_argument("--image-size", type=int, default=SyntheticSpec.image_size)
    p.add_argument("--seed", type=int, default=SyntheticSpec.seed)
    a = p.parse_args(argv)
    if a.image_size < 32:
        p.error("--image-size must be at least 32")
    if min(a.num_train, a.num_val, a.num_test) < 0:
        p.error("--num-train, --num-val and --num-test must be non-negative")
    spec = SyntheticSpec(num_train=a.num_train, num_val=a.num_val, num_test=a.num_test, image_size=a.image_size,
                         seed=a.seed)
    print(generate(a.out, spec))


if __name__ == "__main__":
    main()
