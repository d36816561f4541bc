"""`python -m tfkd`: the same as the `tfkd` command."""

import sys

from tfkd.cli import main

sys.exit(main())
