"""`align <stage>`: one thin subcommand per pipeline stage; the logic lives in the package."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from align.errors import UserError
from align.threads import THREADS_ENV, threads_from_env, use_threads

if TYPE_CHECKING:
    from align.config import Params
    from align.stages import Job

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
Command = Callable[["Params", argparse.Namespace], None]
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


def pipeline_job(params: Params, args: argparse.Namespace) -> Job | None:
    """The pipeline's job a stage command runs, when it writes at the pipeline's places; None for
    other commands and for outputs written elsewhere (another `--runs-root` or `--results`)."""
    from align.stages import RESULTS_ROOT, RUNS_ROOT, STAGES, dataset_job, run_job

    stage = args.command.replace("-", "_")  # `sam-masks` runs stage sam_masks
    if stage not in STAGES or getattr(args, "runs_root", RUNS_ROOT) != RUNS_ROOT:
        return None
    if getattr(args, "results", RESULTS_ROOT) != RESULTS_ROOT:
        return None
    dataset = getattr(args, "dataset", None) or params.dataset
    if STAGES[stage].per_run:
        return run_job(stage, dataset, args.domain, args.method, args.seed)
    return dataset_job(stage, dataset)


@contextlib.contextmanager
def job_log(job: Job | None) -> Iterator[None]:
    """Everything the job logs, and how it ended, also into its own file `logs/<job>.log`
    (Snakemake's `log:` of the rule; the same file under DVC), kept when the job fails."""
    if job is None:
        yield
        return
    from align.stages import log_file

    path = log_file(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)
    try:
        yield
        logging.getLogger("align").info("%s: done", job.name)
    except BaseException as error:
        logging.getLogger("align").error("%s: failed: %s", job.name,
                                         str(error) or type(error).__name__)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="align", description=__doc__)
    # No default here: the parameters' module imports every method, and so torch, which would
    # make `align --help` take seconds; main() fills in config.DEFAULT_PARAMS.
    parser.add_argument("--params", type=Path, help="parameter file (default: params.yaml)")
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
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format=LOG_FORMAT)
    _, function, _ = COMMANDS[args.command]
    try:
        use_threads(args.threads if args.threads is not None else threads_from_env())
        from align.config import DEFAULT_PARAMS, load_params

        params = load_params(args.params or DEFAULT_PARAMS)
        job = pipeline_job(params, args)
        with job_log(job):
            function(params, args)
            if job is not None:  # what it left, for Snakemake to notice changes by hand
                from align.outputs import seal

                seal(params, job)
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
