"""`python -m olives` is the same as the `olives` command."""

import sys

from olives.cli import main

sys.exit(main())
