"""``python -m augment``: the augmentation command line (same flags as Haystack's augment_squad.py)."""

import sys

from augment.cli import main

if __name__ == "__main__":
    sys.exit(main())
