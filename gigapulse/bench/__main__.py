"""``python -m gigapulse.bench <peer> '<json args>'``: a peer of the stream bench in its own process."""

import sys

from gigapulse.bench.peers import _peer_main

sys.exit(_peer_main(sys.argv[1:]))
