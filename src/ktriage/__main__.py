import sys

from ktriage.cli import main

sys.exit(main())
