"""`python -m tokenpulse` is the `tokenpulse` command."""

from tokenpulse.cli import main

raise SystemExit(main())
