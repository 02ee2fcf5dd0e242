"""`python -m callrelay`: the same as `callrelay`."""

import sys

from callrelay.cli import main

if __name__ == "__main__":
    sys.exit(main())
