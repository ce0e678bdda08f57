"""`vipnb data | train | recipe | evaluate | run | bench | proof | report` — the command line over the package."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from vipnb.errors import VipnbError


def _data(args) -> None:
    if args.dataset in ("fashion50", "vipriors", "fashion-boxes") and args.out is None:
        raise VipnbError(f"`vipnb data {args.dataset}` needs --out DIR")
    if args.dataset == "fashion50":
        from vipnb.data.fashion50 import build_fashion50

        out = build_fashion50(args.out, per_class=args.per_class, seed=args.seed,
                              source_dir=_fashion_mnist(args), rebuild=args.rebuild)
        print(f"fashion50 ready at {out}")
    elif args.dataset == "vipriors":
        from vipnb.data.vipriors import build_vipriors

        for flag in ("imagenet", "splits"):
            if getattr(args, flag) is None:
                raise VipnbError(f"`vipnb data vipriors` needs --{flag} DIR")
        report = build_vipriors(args.imagenet, args.splits, args.out, classes=args.classes,
                                mode=args.mode, rebuild=args.rebuild)
        print(report.summary())
    elif args.dataset == "fashion-boxes":
        from vipnb.data.fashion50 import find_fashion_mnist, load_fashion_mnist
        from vipnb.data.fashion_boxes import build_fashion_boxes

        source = _fashion_mnist(args)
        options = {key: getattr(args, key) for key in ("canvas", "train_per_class",
                                                       "test_per_class", "item_side",
                                                       "distractors")
                   if getattr(args, key) is not None}
        out = build_fashion_boxes(args.out, seed=args.seed, rebuild=args.rebuild,
                                  source=load_fashion_mnist(find_fashion_mnist(source))
                                  if source else None, **options)
        print(f"fashion-boxes ready at {out} (read it with `vipnb data cub --root {out}`)")
    elif args.dataset == "cub":
        from vipnb.data.cub import cub_summary, read_cub

        if args.root is None:
            raise VipnbError("`vipnb data cub` needs --root DIR, the CUB_200_2011 folder "
                             "holding images.txt")
        print(cub_summary(read_cub(args.root, check_images=True)))


def _fashion_mnist(args) -> str | None:
    """--fashion-mnist, else $VIPNB_FASHION_MNIST: a folder of the four Fashion-MNIST files."""
    return args.fashion_mnist or os.environ.get("VIPNB_FASHION_MNIST")


def _with_data_places(overrides: dict) -> dict:
    """`overrides` after where the built-in datasets are built and images decoded (`VIPNB_DATA`
    or ./data, or the `-p data_dir` given), resolved here and passed down in the recipe."""
    from vipnb import paths

    return {**paths.data_places(overrides.get("data_dir")), **overrides}


def _runs_root(args) -> Path:
    """`--runs` (`vipnb train`), else the default runs folder (`VIPNB_RUNS` or ./runs): where
    runs live is resolved here, at the command line, and passed down."""
    from vipnb import paths

    return Path(getattr(args, "runs", None) or paths.runs_root())


def _cluster(args):
    """The cluster options, with submitit's logs under the runs folder the command uses."""
    from vipnb.launch import ClusterOptions

    return ClusterOptions(launcher=args.launcher, partition=args.partition,
                          gpus_per_node=args.gpus_per_node, nodes=args.nodes,
                          timeout_min=args.timeout_min,
                          folder=_runs_root(args) / "submitit" / "%j")


def _add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster (submitit)")
    group.add_argument("--launcher", choices=["slurm", "local"],
                       help="submit through submitit instead of running here")
    group.add_argument("--partition", help="Slurm partition")
    group.add_argument("--gpus-per-node", type=int, default=1,
                       help="GPUs (= data-parallel tasks) per node")
    group.add_argument("--nodes", type=int, default=1)
    group.add_argument("--timeout-min", type=int, default=24 * 60)


def _train(args) -> None:
    from vipnb.engine.recipe import parse_overrides

    overrides = _with_data_places(parse_overrides(args.param))
    if args.launcher:
        from vipnb.launch import submit, train_job

        jobs = [(recipe, args.profile, overrides, _runs_root(args)) for recipe in args.recipe]
        local = args.launcher == "local"
        results = submit(train_job, jobs, _cluster(args), wait=local)
        for path in results if local else []:
            print(f"run directory: {path}")
        return
    for name in args.recipe:
        _train_one(name, args, overrides)


def _train_one(name: str, args, overrides: dict) -> None:
    from vipnb.engine import load_recipe, train

    recipe = load_recipe(name, args.profile, overrides)
    run = train(recipe, runs_root=_runs_root(args), resume=not args.restart)
    print(json.dumps(run.summary(), indent=1))
    print(f"run directory: {run.path}")


def _show_recipe(args) -> None:
    """The recipe resolved for a profile, by concern: what it changes from the defaults, or
    (--all) every setting."""
    import yaml

    from vipnb.engine.recipe import load_recipe, parse_overrides

    recipe = load_recipe(args.recipe, args.profile,
                         _with_data_places(parse_overrides(args.param)))
    readable = {tuple: list, str: str.strip}  # YAML lists; a folded description's newline
    grouped = {concern: {key: readable.get(type(value), lambda v: v)(value)
                         for key, value in settings.items()}
               for concern, settings in recipe.grouped(changed_only=not args.all).items()
               if settings}
    print(yaml.safe_dump(grouped, sort_keys=False, width=100), end="")


def _evaluate(args) -> None:
    from vipnb.engine.rundir import RunDir
    from vipnb.eval.submission import write_submission

    run = RunDir(args.run)
    logits = run.logits(args.split)
    print(f"{run.path.name}: {args.split} top-1 = {logits.top1:.4f} ({len(logits.ids)} images)")
    if args.submission:
        path = write_submission(args.submission, logits.ids, logits.predictions)
        print(f"submission written to {path}")


def _run(args) -> None:
    from vipnb.engine.recipe import parse_overrides
    from vipnb.run import list_notebooks, parameters_for, run_notebook

    names = list_notebooks() if args.all else args.notebooks
    if not names:
        raise VipnbError("name a notebook (e.g. `vipnb run 00`) or pass --all")
    parameters = parse_overrides(args.param)
    if args.launcher:
        from vipnb.launch import notebook_job, submit

        jobs = [(name, args.profile, parameters_for(name, parameters, len(names) > 1),
                 args.overwrite) for name in names]
        submit(notebook_job, jobs, _cluster(args), wait=args.launcher == "local")
        return
    with _notebook_output_shown():
        for number, name in enumerate(names, 1):
            print(f"notebook {number} of {len(names)}: {name} ({args.profile})", flush=True)
            signal.signal(signal.SIGTERM, _interrupt)  # papermill's kernel client resets it
            run_notebook(name, args.profile, parameters_for(name, parameters, len(names) > 1),
                         overwrite=args.overwrite, progress=True)


@contextmanager
def _notebook_output_shown():
    """papermill logs each cell's output (training progress included) at INFO: print it."""
    import logging

    logger = logging.getLogger("papermill")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _bench(args) -> None:
    from vipnb.bench import bench, save_throughput, write_bench_report

    started = time.perf_counter()
    if args.choices:
        from vipnb.measure import measure_choices, write_choices_report

        choices = measure_choices(_with_data_places({}))
        print(json.dumps(choices, indent=1))
        if args.save:
            path = write_choices_report(choices, time.perf_counter() - started)
            print(f"written to {path}", file=sys.stderr)
        return
    from vipnb.engine.recipe import parse_overrides

    result = bench(_with_data_places(parse_overrides(args.param)), model=args.model,
                   profile=args.profile, epochs=args.epochs, workers=args.workers)
    if args.json:
        print(json.dumps(result.as_dict(), indent=1))
    else:
        print(f"{result.model} @ {result.input_size} px, batch {result.batch_size}, "
              f"{result.machine}\n"
              f"  compute-only {result.compute_images_per_s:8.1f} images/s\n"
              f"  vipnb        {result.vipnb_images_per_s:8.1f} images/s\n"
              f"  reference    {result.reference_images_per_s:8.1f} images/s\n"
              f"  efficiency {result.efficiency:.2f} · speedup {result.speedup:.2f}")
    if args.save:
        path = write_bench_report(result, time.perf_counter() - started)
        print(f"written to {path}", file=sys.stderr)
        print(f"throughput entry written to {save_throughput(result)}", file=sys.stderr)


def _plan(args) -> None:
    """The runs a notebook would train at a profile that are not finished yet, and their cost."""
    from vipnb import paths
    from vipnb.bench import throughput_table
    from vipnb.engine.recipe import parse_overrides
    from vipnb.study.plan import plan_notebook

    settings = parse_overrides(args.param)
    seeds = settings.pop("seeds", [0])
    seeds = [seeds] if isinstance(seeds, int) else seeds
    if not (isinstance(seeds, list) and seeds
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise VipnbError(f"-p seeds={seeds!r}: give the notebook's seeds as a list of "
                         "non-negative integers, e.g. -p seeds=[0,1,2]")
    plan = plan_notebook(args.notebook, args.profile, seeds, _runs_root(args),
                         _with_data_places(settings),
                         args.throughput or throughput_table(), args.device,
                         paths.reports_root(args.profile))
    print(plan.as_text())


def _whole_number_or_auto(value: str) -> int | str:
    if value == "auto":
        return value
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"{value!r}: give a whole number or `auto`")


def _positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if seconds > 0:
        return seconds
    raise argparse.ArgumentTypeError(f"{value!r}: give a number of seconds above 0")


def _proof(args) -> None:
    from vipnb.proof import run_proof

    report = run_proof(quick=args.quick, reports_root=args.reports,
                       step_limit_s=args.step_limit)
    print(f"proof written to {report}")


def _report(args) -> None:
    from vipnb import paths
    from vipnb.report.index import write_index

    print(f"index written to {write_index(Path(args.reports or paths.reports_root()))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vipnb", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="build a dataset in the VIPriors layout "
                               "(fashion50, vipriors) or CUB's (fashion-boxes), or check CUB")
    data.add_argument("dataset", choices=["fashion50", "vipriors", "fashion-boxes", "cub"])
    data.add_argument("--out", help="output directory (fashion50, vipriors, fashion-boxes)")
    data.add_argument("--root", help="cub: the CUB_200_2011 folder holding images.txt")
    data.add_argument("--seed", type=int, default=0,
                      help="fashion50: split seed; fashion-boxes: draw and layout seed")
    data.add_argument("--per-class", type=int, default=50, help="fashion50: train/val per class")
    data.add_argument("--fashion-mnist", metavar="DIR",
                      help="fashion50, fashion-boxes: the folder of the four Fashion-MNIST .gz "
                           "files (default: $VIPNB_FASHION_MNIST, then Debian's, then download)")
    data.add_argument("--canvas", type=int, help="fashion-boxes: image side in px (64)")
    data.add_argument("--train-per-class", type=int, help="fashion-boxes: train images (100)")
    data.add_argument("--test-per-class", type=int, help="fashion-boxes: test images (50)")
    data.add_argument("--item-side", type=int, nargs=2, metavar=("LOW", "HIGH"),
                      help="fashion-boxes: the item's side in px of a 64 px canvas (24 48)")
    data.add_argument("--distractors", type=int, nargs=2, metavar=("FEWEST", "MOST"),
                      help="fashion-boxes: patches of other items per image (2 4)")
    data.add_argument("--imagenet", help="vipriors: ImageNet-2012 root with train/ and val/")
    data.add_argument("--splits", help="vipriors: folder of train/val/test.pickle")
    data.add_argument("--classes", type=int, help="vipriors: keep the first N classes")
    data.add_argument("--mode", default="link", choices=["link", "symlink", "copy"])
    data.add_argument("--rebuild", action="store_true",
                      help="empty --out's earlier build (e.g. of other settings) and build anew")
    data.set_defaults(func=_data)

    train = commands.add_parser("train", help="train one recipe (reuses a finished run)")
    train.add_argument("recipe", nargs="+", help="recipe names (vipnb/recipes) or YAML paths")
    train.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    train.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    train.add_argument("--runs", help="runs root (default: ./runs or $VIPNB_RUNS)")
    resume = train.add_mutually_exclusive_group()
    resume.add_argument("--resume", action="store_true", default=True,
                        help="continue an interrupted run from its checkpoint (default)")
    resume.add_argument("--restart", action="store_true", help="train an unfinished run anew")
    _add_cluster_arguments(train)
    train.set_defaults(func=_train)

    show = commands.add_parser("recipe", help="show a recipe resolved for a profile, by concern")
    show.add_argument("recipe", help="a recipe name (vipnb/recipes) or YAML path")
    show.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    show.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--all", action="store_true", help="every setting, defaults included")
    show.set_defaults(func=_show_recipe)

    evaluate = commands.add_parser("evaluate", help="score a finished run from its logits")
    evaluate.add_argument("run", help="run directory")
    evaluate.add_argument("--split", default="test", choices=["val", "test"])
    evaluate.add_argument("--submission", help="write the official submission CSV here")
    evaluate.set_defaults(func=_evaluate)

    run = commands.add_parser("run", help="execute notebooks headless with papermill")
    run.add_argument("notebooks", nargs="*", help="notebook names or numbers (e.g. 00)")
    run.add_argument("--all", action="store_true", help="every notebook in notebooks/")
    run.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="notebook parameter, e.g. -p seeds=[0,1]")
    run.add_argument("--overwrite", action="store_true",
                     help="replace a report folder that holds another profile's report or "
                          "files no vipnb run wrote")
    _add_cluster_arguments(run)
    run.set_defaults(func=_run)

    bench = commands.add_parser("bench", help="measure training speed against its ceiling")
    bench.add_argument("--model", help="timm model name (default: the cpu baseline's)")
    bench.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"],
                       help="the baseline recipe's profile (paper: its image size and batch)")
    bench.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="recipe overrides, e.g. -p data_root=DIR -p input_size=320")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.add_argument("--choices", action="store_true",
                       help="measure NCHW vs channels_last per cpu model and the crop backends")
    bench.add_argument("--epochs", type=int, default=2, help="measured epochs per loop")
    bench.add_argument("--workers", default="auto", type=_whole_number_or_auto,
                       help="reference loop's DataLoader workers (default: this machine's CPUs, "
                            "as `workers: auto`)")
    bench.add_argument("--save", action="store_true",
                       help="also write reports/bench/ and this machine's entry in "
                            "reports/bench/throughput.csv (what `vipnb plan` estimates from)")
    bench.set_defaults(func=_bench)

    plan = commands.add_parser("plan", help="list the runs a notebook would train that are not "
                               "finished, with images seen and estimated device-hours")
    plan.add_argument("notebook", help="notebook name or number (e.g. 01)")
    plan.add_argument("--profile", default="cpu", choices=["smoke", "cpu", "paper"])
    plan.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                      help="the notebook's seeds (-p seeds=[0,1,2]; default [0]) or a recipe "
                           "setting it passes (-p data_root=DIR)")
    plan.add_argument("--runs", help="runs root (default: ./runs or $VIPNB_RUNS)")
    plan.add_argument("--throughput", metavar="CSV",
                      help="measured rates (default: reports/bench/throughput.csv)")
    plan.add_argument("--device", help="whose measured rates to use, as the table names it "
                                       "(default: this machine's)")
    plan.set_defaults(func=_plan)

    proof = commands.add_parser("proof", help="check the paper path on this machine's GPU: "
                                "bench at the papers' sizes and two epochs of one paper "
                                "recipe per notebook on generated data (minutes)")
    proof.add_argument("--quick", action="store_true",
                       help="small images and batches: the same path in about a minute on a CPU")
    proof.add_argument("--reports", help="reports root (default: ./reports); writes "
                       "bench/<machine>-proof.md and the bench entries")
    proof.add_argument("--step-limit", type=_positive_seconds, metavar="SECONDS",
                       help="stop a step that runs longer and go on with the next (it is a "
                            "failed row of the report); default: no limit")
    proof.set_defaults(func=_proof)

    report = commands.add_parser("report", help="rewrite reports/index.md")
    report.add_argument("--reports", help="reports root (default: ./reports)")
    report.set_defaults(func=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        args.func(args)
    except VipnbError as e:
        print(f"vipnb: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the user gave: unreadable, unwritable, full disk
        if not e.filename:
            raise
        print(f"vipnb: error: {e.filename}: {e.strerror or e}; check the path and its "
              "permissions", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vipnb: interrupted; what was finished is kept, reports were left as they were",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)
    return 0


def _interrupt(signum, frame) -> None:
    """SIGTERM as Ctrl-C, so clean-up (staging folders, locks) runs before the exit."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
