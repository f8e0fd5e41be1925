"""What the caller and the template process say to each other over their socketpair.

    caller -> template   :data:`REQUEST`, one byte, with five descriptors attached: the
                         worker's inbound read end, outbound write end, status write end,
                         current-item slot (shared memory), and its end of the socketpair
                         that passes out-of-band buffers
    caller -> template   :data:`PRELOAD`, one byte, no descriptors and no answer: the coming
                         workers' function goes by value, import cloudpickle now (the caller
                         is importing it too), so that each worker does not
    caller -> template   :data:`IMPORT`, one byte, then the size (:data:`SIZE`) and a
                         marshalled list of module names, no answer: import them before
                         forking the next worker. If that started threads (forks would be
                         unsafe), the template answers the next request with pid 0 and
                         forks no more
    template -> caller   the worker's pid (:data:`PID`; negative: -errno, the fork failed),
                         with a pidfd attached where the platform has them

When a worker ends, the template writes its exit code (:data:`STATUS`, negative for a
signal, as in multiprocessing) to the worker's status pipe. Both sides import this
module; it imports nothing but :mod:`struct`.
"""

from __future__ import annotations

import struct

__all__ = ["IMPORT", "PID", "PRELOAD", "REQUEST", "REQUEST_FDS", "SIZE", "STATUS"]

REQUEST = b"W"
PRELOAD = b"P"
IMPORT = b"I"
SIZE = struct.Struct("<I")
REQUEST_FDS = 5
PID = struct.Struct("<q")
STATUS = struct.Struct("<i")
