"""`python -m callpolicy check` and `python -m callpolicy explain`."""

from callpolicy.cli import main

raise SystemExit(main())
