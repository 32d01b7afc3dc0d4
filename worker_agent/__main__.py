"""`python -m worker_agent --router HOST:PORT ...`"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from worker_agent.cli import add_worker_arguments, run_worker


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m worker_agent", description="Run a worker agent next to a model backend."
    )
    add_worker_arguments(parser)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(run_worker(args))


if __name__ == "__main__":
    sys.exit(main())
