"""``python -m circuits``: the ``p0-circuits`` command."""

import sys

from circuits.cli import main

sys.exit(main())
