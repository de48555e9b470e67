"""Paper check ``pattern_recovery``: see paper_checks/README.md and :mod:`hclstat.checks`.

Usage: python paper_checks/pattern_recovery.py [--quick|--full] [--out DIR]
Exit status 0 when the claim holds, 1 when it fails.
"""

import sys

from hclstat.checks import main

if __name__ == "__main__":
    sys.exit(main("pattern_recovery"))
