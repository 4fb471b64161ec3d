"""`python -m agent` runs the same command line as the `lookout` console script."""

from agent.cli import main

raise SystemExit(main())
