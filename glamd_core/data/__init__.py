"""Datasets: Pascal VOC and COCO readers and the embedded synthetic dataset."""

from .base import DetectionDataset, collate
from .coco import COCODetection
from .synthetic import CLASS_NAMES as SYNTHETIC_CLASSES, SyntheticSpec, ensure_dataset, generate
from .transforms import eval_transforms, train_transforms
from .voc import VOC_CLASSES, VOCDetection

__all__ = [
    "COCODetection", "DetectionDataset", "SYNTHETIC_CLASSES", "SyntheticSpec", "VOCDetection", "VOC_CLASSES",
    "collate", "ensure_dataset", "eval_transforms", "generate", "train_transforms",
]
