"""`python -m worker_agent --router HOST:PORT ...` (the same as `mesh worker`)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from mesh.cli import add_logging_arguments, configure_logging
from worker_agent.cli import add_worker_arguments, run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker_agent", description="Run a worker agent next to a model backend."
    )
    add_worker_arguments(parser)
    add_logging_arguments(parser)
    args = parser.parse_args(argv)
    configure_logging(args.log_level, args.json_logs)
    return asyncio.run(run_worker(args))


if __name__ == "__main__":
    sys.exit(main())
