"""Command line: ``python -m glamd_core {reproduce,train} ...``"""

from __future__ import annotations

import argparse
import json

from .detectors import KINDS
from .profiles import PROFILES, get_profile


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m glamd_core", description="GLAMD reproduction")
    sub = p.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="train teachers and students of a profile, write results/")
    rep.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    rep.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    rep.add_argument("--seeds", nargs="+", type=int, help="default: the profile's seeds")
    tr = sub.add_parser("train", help="train and evaluate one detector (cached in runs/)")
    tr.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    tr.add_argument("--kind", default="retinanet", choices=KINDS)
    tr.add_argument("--backbone", default=None, help="timm name; default: the profile's student")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--voc-root", default=None, help="real VOC root for the paper profile")
    a = p.parse_args(argv)
    profile = get_profile(a.profile)
    if a.command == "reproduce":
        from .reproduce import run_baselines

        table = run_baselines(profile, a.kinds, a.seeds)
        print(table.to_string(index=False))
    else:
        from .runs import train_detector

        print(json.dumps(train_detector(a.kind, a.backbone or profile.student_backbone, profile, a.seed,
                                        voc_root=a.voc_root), indent=2))


if __name__ == "__main__":
    main()
