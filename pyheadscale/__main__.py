import sys

from pyheadscale.cli.main import main

sys.exit(main())
