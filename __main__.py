"""`python -m ctloop` runs the same command line as the `ctloop` console script."""

from ctloop.pipelines.cli import main

raise SystemExit(main())
