import sys

from clickloop.cli.app import main

sys.exit(main())
