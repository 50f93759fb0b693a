"""``python -m varbayes``: the same as the ``varbayes`` command."""

import sys

from varbayes.inference.cli import main

sys.exit(main())
