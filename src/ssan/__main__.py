"""``python -m ssan`` runs the command-line interface."""

import sys

from ssan.cli import main

if __name__ == "__main__":
    sys.exit(main())
