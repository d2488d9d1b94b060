import sys

from overinterp.cli import main

sys.exit(main())
