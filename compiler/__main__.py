import sys

from cgsc.cli import main

sys.exit(main())
