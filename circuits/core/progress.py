"""Status lines between progress bars.

Progress bars (tqdm) draw on stderr and redraw in place with carriage returns; a status line
printed to stdout while a bar is drawn, or buffered while the bar is not, lands on the bar's
line ("...| 12/40selected components: [...]"), in a terminal and in a log file alike.
``status`` clears every bar, writes the line, flushes stdout and redraws the bars.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm


def status(message: str) -> None:
    """Write ``message`` as a line of its own on stdout, never on a progress bar's line."""
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()
