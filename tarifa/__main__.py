import sys

from tarifa.cli import main

sys.exit(main())
