"""``python -m mexlib``: the ``mexlib`` command (:mod:`mexlib.cli`)."""

import sys

from .cli import main

sys.exit(main())
