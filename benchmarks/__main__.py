"""`make bench`: speed, memory and quality benchmarks, each printed beside a reference measured in
the same run (never as absolute timings in unit tests).

    python -m benchmarks [all|simulator|features|training|batch|service] [--quick]
        [--repeat N]   # features: N interleaved runs of each side, fastest compared (2)
    python -m benchmarks profile [--quick]   # where the features benchmark's time goes
    python -m benchmarks spark [--quick]     # Spark local[2] vs DuckDB (`make bench-spark`)

`all` runs simulator, features, training, batch and service; `profile` and `spark` (which needs
Java) run only when named. Where each one lives: simulator, features, profile and training in
`benchmarks/pipeline.py`, batch in `benchmarks/batch.py` (`python -m benchmarks.batch` takes
`--accounts`, `--target`...), service in `benchmarks/service.py`, spark in `benchmarks/spark.py`
(`python -m benchmarks.spark training` runs one job).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from benchmarks.common import console
from benchmarks.pipeline import bench_features, bench_simulator, bench_training, profile_features

ALL = ("simulator", "features", "training", "batch", "service")
ONLY_WHEN_NAMED = ("profile", "spark")


def _runner(name: str, args: argparse.Namespace) -> Callable[[], object]:
    """The call that runs benchmark `name`; the serving ones are imported only when run."""
    if name == "simulator":
        return lambda: bench_simulator(args.quick)
    if name == "features":
        return lambda: bench_features(args.quick, max(1, args.repeat))
    if name == "training":
        return lambda: bench_training(args.quick)
    if name == "profile":
        return lambda: profile_features(args.quick)
    if name == "batch":
        from benchmarks.batch import main as batch_main

        return lambda: batch_main(quick=args.quick)
    if name == "service":
        from benchmarks.service import main as service_main

        return lambda: service_main(quick=args.quick)
    if name == "spark":
        from benchmarks.spark import main as spark_main

        return lambda: spark_main(quick=args.quick)
    raise KeyError(name)


def main(argv: list[str] | None = None) -> None:
    """Run the named benchmarks (all of `ALL` by default), each under its own heading."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "which",
        nargs="*",
        default=["all"],
        help=f"all or any of {', '.join(ALL)}; or {' or '.join(ONLY_WHEN_NAMED)} (not in all)",
    )
    parser.add_argument("--quick", action="store_true", help="Smaller sizes, for a smoke run.")
    parser.add_argument(
        "--repeat",
        type=int,
        default=2,
        help="features: runs of each side, interleaved; the fastest of each is compared",
    )
    args = parser.parse_args(argv)
    which = list(ALL) if args.which == ["all"] else args.which
    unknown = [name for name in which if name not in (*ALL, *ONLY_WHEN_NAMED)]
    if unknown:  # before any benchmark runs, not after an hour of the others
        sys.exit(
            f"unknown benchmark {unknown[0]!r}; choose from {', '.join(ALL + ONLY_WHEN_NAMED)}"
        )
    for name in which:
        console.rule(name)
        _runner(name, args)()


if __name__ == "__main__":
    main()
