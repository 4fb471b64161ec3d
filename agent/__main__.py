"""`python -m agent` runs the same command line as the `lookout` console script."""

from agent.cli import main

if __name__ == "__main__":  # not when a worker process (agent.logs.offload) imports it
    raise SystemExit(main())
