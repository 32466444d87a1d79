"""The CLI's `search` and `resume` with stub evaluator actors, on a running (simulated)
cluster: the driver process that `cluster_sim` SIGKILLs mid-search and then resumes.

    python -m benchmarks.sim_driver search ADDRESS TRACKING_URI OUTPUT_DIR WORKERS GPUS
    python -m benchmarks.sim_driver resume ADDRESS TRACKING_URI RUN_DIR
"""

from __future__ import annotations

import sys

from benchmarks.stub_evaluator import CliStubEvaluator
from search.cli import main as cli
from search.pipeline import Search


def main(argv: list[str]) -> int:
    command, address, uri, folder, *size = argv
    Search.evaluator_actor = CliStubEvaluator  # everything else is the product's own path
    common = ["--address", address, "--tracking-uri", uri]
    if command == "resume":
        return cli(["resume", folder, *common])
    workers, gpus = int(size[0]), float(size[1])
    overrides = [f"search.workers={workers}", f"search.gpus_per_trial={gpus}",
                 f"search.population={2 * workers}", "search.generations=2", "final.top_k=0",
                 "name=driver-kill"]
    return cli(["search", "digits", *common, "--output-dir", folder,
                *(a for o in overrides for a in ("--set", o))])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
