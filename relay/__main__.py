"""`python -m relay`: the same program as the `ketang` console script."""

from relay.cli import main

raise SystemExit(main())
