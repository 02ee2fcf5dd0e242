"""`python -m callrelay.simulator`: the same as `callrelay simulate`."""

import sys

from callrelay.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
