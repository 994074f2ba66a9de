"""Command line: ``python -m glamd_core {reproduce,train,runs} ...``"""

from __future__ import annotations

import argparse
import json

from .detectors import KINDS
from .profiles import PROFILES, get_profile


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m glamd_core", description="GLAMD reproduction")
    sub = p.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="the reproduction: run the experiment notebooks with papermill at a "
                         "profile (every notebooks/*.ipynb by default); results in results/<notebook>/")
    rep.add_argument("names", nargs="*", help="notebook names or paths, e.g. 01_voc_small_models")
    rep.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    tr = sub.add_parser("train", help="train and evaluate one detector (cached in runs/)")
    tr.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    tr.add_argument("--kind", default="retinanet", choices=KINDS)
    tr.add_argument("--backbone", default=None, help="timm name; default: the profile's student")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--voc-root", default=None, help="real VOC root for the paper profile")
    rs = sub.add_parser("runs", help="list or clear cached runs in runs/")
    rs.add_argument("action", choices=["list", "clear"])
    rs.add_argument("--pattern", default="*", help="glob over run names, for clear")
    rs.add_argument("--unfinished-only", action="store_true")
    a = p.parse_args(argv)
    if a.command == "reproduce":
        from .reproduce import reproduce

        for out in reproduce(a.profile, a.names):
            print("executed", out)
        return
    if a.command == "runs":
        from .experiments import clear_runs, list_runs

        if a.action == "list":
            print(list_runs().to_string(index=False))
        else:
            print("removed:", *clear_runs(pattern=a.pattern, unfinished_only=a.unfinished_only), sep="\n  ")
        return
    profile = get_profile(a.profile)
    if a.command == "train":
        from .runs import train_detector

        print(json.dumps(train_detector(a.kind, a.backbone or profile.student_backbone, profile, a.seed,
                                        voc_root=a.voc_root), indent=2))


if __name__ == "__main__":
    main()
