import sys

from autoperf.cli import main

sys.exit(main())
