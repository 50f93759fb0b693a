"""``python -m varbayes``: the same as the ``varbayes`` command."""

import sys

from varbayes.inference.cli import main

if __name__ == "__main__":  # importing this module (e.g. to document it) runs nothing
    sys.exit(main())
