import sys

from recexp.cluster.validate import main

sys.exit(main())
