"""``python -m pyheadscale.policy check FILE`` / ``simulate CASE.json ...``."""

import sys

from pyheadscale.policy.cli import main

sys.exit(main())
