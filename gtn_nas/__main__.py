"""`python -m gtn_nas ...`: the same command line as the `gtn-nas` script."""

import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main())
