"""The agent's command line: ``run`` a job, or hand ``metrics``/``facts`` to their modules.

    python -m bench.agent run --job '<AgentJob JSON>' [--out PATH]
    python -m bench.agent run --job-file job.json [--out PATH]   (- reads the job from stdin)
    python -m bench.agent metrics ...   (bench.agent.hostmetrics:main)
    python -m bench.agent facts ...     (bench.agent.hostfacts:main)
    python -m bench.agent hostrun --dir RUN_DIR [--detach]   (bench.agent.hostrun:main)
    python -m bench.agent redis {call,create} ...   (bench.agent.redisadmin:main)

Exit codes of ``run``: 0 done; 1 fatal error (a result is still printed, with "fatal");
2 invalid job (message on stderr, no result); 128+N stopped by signal N (a result is still
printed, with "interrupted": true).
"""

from __future__ import annotations

import argparse
import importlib
import sys

USAGE = "usage: python -m bench.agent {run,metrics,facts,hostrun,redis} ..."
DELEGATES = {"metrics": "bench.agent.hostmetrics", "facts": "bench.agent.hostfacts", "hostrun": "bench.agent.hostrun",
             "redis": "bench.agent.redisadmin"}


def _delegate(command: str, argv: list[str]) -> int:
    """Import the subcommand's module only when asked, so ``run`` never pays for it."""
    name = DELEGATES[command]
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        print(f"fleetbench-agent: {command!r} is not available: {name} is not in this build", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent run",
                                     description="Apply one AgentJob's load and print its result JSON.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--job", help="the AgentJob as JSON")
    source.add_argument("--job-file", help="a file holding the AgentJob JSON, or - for stdin (how the "
                                           "controller sends it: a job may hold secrets)")
    parser.add_argument("--out", help="also write the result here (atomically)")
    parser.add_argument("--start-file", help="once connected (and prefilled), create START.ready and wait for "
                                             "START to hold the epoch second the measured window opens")
    args = parser.parse_args(argv)

    from bench.agent.runner import EXIT_INVALID, run
    from bench.wire.job import AgentJob, InvalidJob

    text = args.job
    try:
        if text is None and args.job_file == "-":
            text = sys.stdin.read()
        elif text is None:
            with open(args.job_file) as f:
                text = f.read()
        job = AgentJob.from_json(text)
        return run(job, args.out, args.start_file)  # raises InvalidJob only before connecting
    except InvalidJob as exc:
        print(f"fleetbench-agent: invalid job: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"fleetbench-agent: cannot read the job: {exc}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return _run(rest)
    if command in DELEGATES:
        return _delegate(command, rest)
    print(f"fleetbench-agent: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
