"""Command line: ``python -m glamd_core {reproduce,run,runs} ...``"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, fields, replace

from .kernels import exec_canonical

if __name__ == "__main__":  # before torch starts: the command line trains on the canonical kernels
    exec_canonical()

from .detectors import KINDS  # noqa: E402
from .distill import METHODS, DistillConfig  # noqa: E402
from .profiles import PROFILES, get_profile  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m glamd_core", description="GLAMD reproduction")
    sub = p.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="the reproduction: run the experiment notebooks with papermill at a "
                         "profile (every notebooks/*.ipynb by default); results in results/<notebook>/")
    rep.add_argument("names", nargs="*", help="notebook names or paths, e.g. 01_voc_small_models")
    rep.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    rep.add_argument("--workers", type=_positive_int, default=None,
                     help="runs trained at once in parallel processes (default: one per CPU core, up to 4, on "
                     "CPU profiles; 1 for smoke and GPU profiles)")
    rep.add_argument("--data-root", default=None, help="real dataset root for the paper_voc / paper_coco profiles")
    rep.add_argument("--plan", action="store_true", help="train nothing: print every run the notebooks need, cached "
                     "or to train, with estimated minutes and the total wall time for --workers")
    rep.add_argument("--no-pool", action="store_false", dest="pool",
                     help="skip the pool: each notebook trains its own missing runs while it executes (its "
                     "manifest's wall time then covers its runs)")
    rep.add_argument("--executor", choices=["local", "dask", "submitit"], default="local",
                     help="where the pool of missing runs trains: local worker processes (default), a dask cluster "
                     "(--scheduler ADDRESS, else a local one with --workers processes), or SLURM via submitit")
    rep.add_argument("--force", action="store_true",
                     help="allow --workers above the core count for the local pool")
    rep.add_argument("--scheduler", default=None, help="dask: the scheduler's address, e.g. tcp://host:8786")
    rep.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="submitit: a parameter for executor.update_parameters, e.g. --slurm timeout_min=240 "
                     "--slurm slurm_partition=gpu --slurm gpus_per_node=1 (repeatable); --slurm cluster=local "
                     "runs submitit's jobs on this machine, which without it is refused where no SLURM is found")
    sub.add_parser("kernels", help="print this process's CPU kernels as JSON: ATen's dispatch, the oneDNN and MKL "
                   "settings, and whether they are the canonical ones (docs/reproducibility.md)")
    tr = sub.add_parser("run", help="train (or fetch from runs/) and evaluate one experiment: a teacher, a "
                        "student alone, or a distilled student")
    tr.add_argument("--profile", default="cpu", choices=sorted(PROFILES))
    tr.add_argument("--kind", default="retinanet", choices=KINDS)
    tr.add_argument("--method", default="none", choices=["teacher", *METHODS],
                    help="teacher: the teacher itself; none: the student alone; else a distillation method")
    tr.add_argument("--student", default=None, help="timm name; default: the profile's student")
    tr.add_argument("--teacher", default=None, help="timm name; default: the profile's teacher")
    tr.add_argument("--teacher-checkpoint", default=None,
                    help="a teacher trained elsewhere (engine checkpoint or state dict), imported instead of trained")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--threads", type=_positive_int, default=1,
                    help="torch threads of a CPU run (default 1, canonical: the pool's workers train with 1 too, "
                         "and 1-thread runs repeat bit for bit); any other count trains a run under another key")
    for f in fields(DistillConfig):
        if f.name != "method":
            kind = _FIELD_TYPES[str(f.type).split(" | ")[0]]
            shown = "the loss form's" if f.default is None else f.default
            tr.add_argument(f"--{f.name.replace('_', '-')}", type=_parse_bool if kind is bool else kind,
                            default=argparse.SUPPRESS, metavar=kind.__name__.upper(),
                            help=f"distillation setting (default: the profile's chosen setting for the kind "
                                 f"and method, else {shown})")
    tr.add_argument("--data-root", default=None,
                    help="real dataset root for the paper_voc / paper_coco profiles (else $GLAMD_VOC_ROOT / "
                         "$GLAMD_COCO_ROOT, else data/VOCdevkit / data/coco)")
    rs = sub.add_parser("runs", help="list or clear cached runs in runs/")
    rs.add_argument("action", choices=["list", "clear"])
    rs.add_argument("--pattern", default=None, help="glob over run names, e.g. 'retinanet-*' (list: filter; "
                    "clear: which runs to delete)")
    rs.add_argument("--all", action="store_true", dest="everything", help="clear: every run in the cache")
    rs.add_argument("--unfinished-only", action="store_true")
    a = p.parse_args(argv)
    if a.command == "reproduce":
        from .reproduce import format_plan, plan, reproduce

        cores = os.cpu_count() or 1
        if a.executor == "local" and a.workers is not None and a.workers > cores and not a.force:
            p.error(f"--workers {a.workers} is more than this machine's {cores} cores: local runs would only "
                    f"share them (each run trains on one thread). Use --workers {cores} or fewer, or --force")
        if a.plan:
            try:
                print(format_plan(plan(a.profile, a.names, a.workers, data_root=a.data_root)))
            except (FileNotFoundError, ValueError) as error:  # the paper profiles' ImageNet weights; a bad costs table
                p.error(str(error))
            return
        try:
            executor, close = _executor(a)
        except ValueError as error:
            p.error(str(error))
        from .files import BrokenRun

        try:
            for out in reproduce(a.profile, a.names, a.workers, a.data_root, executor=executor, pool=a.pool):
                print("executed", out)
        except BrokenRun as error:  # a cached run's torn eval.json, named before the pool trains
            p.error(str(error))
        finally:
            close()
        return
    if a.command == "kernels":
        from .kernels import state

        print(json.dumps(state(), indent=2))
        return
    if a.command == "runs":
        from .experiments import clear_runs, list_runs

        try:
            if a.action == "list":
                from .runs import RUNS_DIR

                table = list_runs(pattern="*" if a.pattern is None else a.pattern)
                print(table.to_string(index=False) if len(table) else f"no runs in {RUNS_DIR}"
                      + ("" if a.pattern is None else f" matching {a.pattern!r}"))
                return
            removed, busy = clear_runs(pattern=a.pattern, unfinished_only=a.unfinished_only, everything=a.everything)
        except ValueError as error:
            p.error(str(error))
        print(f"removed {len(removed)} run(s)", *removed, sep="\n  ")
        if busy:
            print(f"left {len(busy)} run(s) that another process is training", *busy, sep="\n  ")
        return
    if a.command == "run":
        from .engine import stop_after_epoch
        from .experiments import Experiment, run

        try:
            stop_after_epoch()  # a bad $GLAMD_STOP_AFTER_EPOCH, named before anything trains
            given = {k: getattr(a, k) for k in asdict(DistillConfig()) if k != "method" and hasattr(a, k)}
            method = a.method if a.method in METHODS else "none"
            distill = replace(get_profile(a.profile).distill_for(a.kind, method), **given)
            exp = Experiment(a.kind, a.method, a.profile, a.seed, a.student, a.teacher, distill,
                             teacher_checkpoint=a.teacher_checkpoint, threads=a.threads)
        except ValueError as error:
            p.error(str(error))
        from .engine import TrainingStopped
        from .files import BrokenRun

        try:
            result = run(exp, data_root=a.data_root)  # under torchrun: one DDP run over every rank
        except TrainingStopped as stopped:
            print(stopped)
            return
        except BrokenRun as error:
            p.error(str(error))
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps(result, indent=2))


_FIELD_TYPES = {"str": str, "float": float, "int": int, "bool": bool}


def _executor(a):
    """``(executor, close)`` for ``reproduce --executor``: None for local worker processes."""
    if a.executor == "local":
        if a.scheduler or a.slurm:
            raise ValueError("--scheduler and --slurm go with --executor dask / submitit")
        return None, lambda: None
    if a.executor == "dask":
        if a.slurm:
            raise ValueError("--slurm sets SLURM parameters for --executor submitit; with dask, start the workers "
                             "on SLURM yourself (e.g. dask-jobqueue) and pass --scheduler ADDRESS")
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("--executor dask needs dask.distributed: pip install -e '.[cluster]'") from None
        if a.scheduler:
            try:
                client = Client(a.scheduler, timeout=10)
            except (OSError, TimeoutError) as error:
                raise ValueError(f"--scheduler {a.scheduler}: no dask scheduler answers there ({error}); start one "
                                 "(dask scheduler) or leave --scheduler out for a local cluster") from None
            return client.get_executor(), client.close
        cluster = LocalCluster(n_workers=a.workers or 2, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)

        def close():
            client.close()
            cluster.close()

        return client.get_executor(), close
    if a.scheduler:
        raise ValueError("--scheduler is a dask scheduler's address; it goes with --executor dask")
    try:
        import submitit
    except ImportError:
        raise ValueError("--executor submitit needs submitit: pip install -e '.[cluster]'") from None
    from .runs import RUNS_DIR

    options = {}
    for item in a.slurm:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--slurm takes KEY=VALUE, got {item!r}")
        options[key] = int(value) if value.isdigit() else value
    cluster = options.pop("cluster", None)  # submitit's own choice unless asked for
    executor = submitit.AutoExecutor(folder=RUNS_DIR / "submitit", cluster=cluster)
    if cluster is None and executor.cluster != "slurm":  # AutoExecutor falls back to this machine, silently
        raise ValueError(f"--executor submitit: no SLURM cluster was found (submitit would run the pool here, as "
                         f"{executor.cluster!r}); use --executor local, or --slurm cluster=local to ask for that")
    executor.update_parameters(**options)
    return executor, lambda: None


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


if __name__ == "__main__":
    main()
