"""`python -m biotp.cli ...` runs the `biotp` command."""

import sys

from . import main

sys.exit(main())
