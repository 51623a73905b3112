"""`python -m intrinsic`: the `intrinsic` command."""

import sys

from ._cli import main

sys.exit(main())
