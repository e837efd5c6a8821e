"""`python -m tenantgate.cli`: the same as the `tenantgate` console script."""

import sys

from tenantgate.cli import main

sys.exit(main())
