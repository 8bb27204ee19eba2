"""`align <stage>`: one thin subcommand per pipeline stage; the logic lives in the package."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from align.config import DEFAULT_PARAMS, Params, load_params
from align.errors import UserError
from align.threads import THREADS_ENV, threads_from_env, use_threads

Command = Callable[[Params, argparse.Namespace], None]
COMMANDS: dict[str, tuple[str, Command, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str, arguments: Callable[[argparse.ArgumentParser], None]):
    def decorator(function: Command) -> Command:
        COMMANDS[name] = (help_text, function, arguments)
        return function

    return decorator


def dataset_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", help="dataset name (default: `dataset` in params.yaml)")


def acquire_arguments(parser: argparse.ArgumentParser) -> None:
    dataset_argument(parser)
    parser.add_argument(
        "--refresh", action="store_true",
        help="first delete the dataset's downloads pinned in <data.root>/checksums.json, and "
        "those entries, to download and pin them again (a wrong archive pinned by mistake)",
    )


@command("acquire", "download, extract or generate a dataset's raw images", acquire_arguments)
def acquire(params: Params, args: argparse.Namespace) -> None:
    from align.data.acquire import acquire_dataset

    acquire_dataset(params, args.dataset or params.dataset, refresh=args.refresh)


@command("split", "split each domain 6:2:2 by class, skipping unreadable files", dataset_argument)
def split(params: Params, args: argparse.Namespace) -> None:
    from align.data.split import write_split

    write_split(params, args.dataset or params.dataset)


@command("shard", "write webdataset shards of every domain and split", dataset_argument)
def shard(params: Params, args: argparse.Namespace) -> None:
    from align.data.shards import write_shards

    write_shards(params, args.dataset or params.dataset)


@command(
    "sam-masks",
    "precompute a Segment Anything object mask per image (needs sam.checkpoint)",
    dataset_argument,
)
def sam_masks(params: Params, args: argparse.Namespace) -> None:
    from align.masks.sam import write_sam_masks

    write_sam_masks(params, args.dataset or params.dataset)


def run_arguments(parser: argparse.ArgumentParser) -> None:
    dataset_argument(parser)
    parser.add_argument("--domain", required=True, help="training domain")
    parser.add_argument("--method", required=True, help="method name (see `methods` in params)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--runs-root", type=Path, default=Path("runs"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("train", "train one method on one domain with one seed", run_arguments)
def train(params: Params, args: argparse.Namespace) -> None:
    from align.runs import RunSpec
    from align.train import train_run

    spec = RunSpec(args.dataset or params.dataset, args.domain, args.method, args.seed)
    train_run(params, spec, args.runs_root, show_progress=not args.no_progress)


@command("evaluate", "evaluate one trained run on every domain's test split", run_arguments)
def evaluate(params: Params, args: argparse.Namespace) -> None:
    from align.evaluate import evaluate_run
    from align.runs import RunSpec

    spec = RunSpec(args.dataset or params.dataset, args.domain, args.method, args.seed)
    evaluate_run(params, spec, args.runs_root, show_progress=not args.no_progress)


def report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-root", type=Path, default=Path("runs"))
    parser.add_argument("--results", type=Path, default=Path("results"))


@command("report", "tables, figures and dvc metrics/plots from the evaluations", report_arguments)
def report(params: Params, args: argparse.Namespace) -> None:
    from align.report import write_report

    write_report(params, args.runs_root, args.results)


def identify_arguments(parser: argparse.ArgumentParser) -> None:
    dataset_argument(parser)
    parser.add_argument("--root", type=Path, default=Path("identities"),
                        help="folder of the identity files (default: identities)")
    parser.add_argument("--part", choices=["data", "runs"],
                        help="only the data stages' jobs, or only the others (default: all)")
    parser.add_argument("--explain", metavar="JOB",
                        help="print what JOB's identity is made of (e.g. "
                        "train/synthetic/gradient/erm/seed0) instead of writing the files")


@command(
    "identify",
    "write each grid job's identity file (only those that changed): what DVC reruns by",
    identify_arguments,
)
def identify(params: Params, args: argparse.Namespace) -> None:
    from align.identity import explain, write_identities

    if args.explain:
        print(explain(params, args.explain), end="")
        return
    changed = write_identities(params, args.root, args.dataset, args.part)
    logging.getLogger("align.identify").info("%d identity file(s) changed", len(changed))


@command("check-params", "validate params.yaml and print the resolved values", lambda parser: None)
def check_params(params: Params, args: argparse.Namespace) -> None:
    print(params.model_dump_json(indent=2))


def seal_job(params: Params, args: argparse.Namespace) -> None:
    """Record what a stage command's job left at the pipeline's places (`align.outputs`), so
    that Snakemake notices when it is changed by hand; outputs written elsewhere (another
    `--runs-root` or `--results`) are not the pipeline's."""
    from align.outputs import seal
    from align.stages import PER_RUN_STAGES, RESULTS_ROOT, RUNS_ROOT, STAGES, dataset_job, run_job

    stage = args.command.replace("-", "_")  # `sam-masks` runs stage sam_masks
    if stage not in STAGES or getattr(args, "runs_root", RUNS_ROOT) != RUNS_ROOT:
        return
    if getattr(args, "results", RESULTS_ROOT) != RESULTS_ROOT:
        return
    dataset = getattr(args, "dataset", None) or params.dataset
    if stage in PER_RUN_STAGES:
        seal(params, run_job(stage, dataset, args.domain, args.method, args.seed))
    else:
        seal(params, dataset_job(stage, dataset))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align", description=__doc__)
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="parameter file")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads", type=int, metavar="N",
        help="CPU threads this job may use: torch's threads and, on a GPU, N - 1 DataLoader "
        f"workers (default: ${THREADS_ENV}, else torch's default)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, arguments) in COMMANDS.items():
        arguments(subparsers.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    _, function, _ = COMMANDS[args.command]
    try:
        use_threads(args.threads if args.threads is not None else threads_from_env())
        params = load_params(args.params)
        function(params, args)
        seal_job(params, args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader of our output went away (`align check-params | head -1`): not a fault. The
        # interpreter flushes stdout again at exit, so point it at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as error:
        print(f"align {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"align {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
