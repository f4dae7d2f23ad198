"""`python -m userlb` runs the command line (userlb.cli.main)."""

from userlb.cli import main

raise SystemExit(main())
