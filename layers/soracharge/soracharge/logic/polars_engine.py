"""polars, loaded with the allocator settings of the import: import ``pl`` from here, never polars itself.

polars allocates with jemalloc, which keeps freed pages for reuse: with polars' own settings a scan of
segment after segment left the process some 20 MB larger for each (measured with
``bench/import_throughput.py``: the peak grew by about 900 bytes a charge from 10,000 to 40,000 SIMs).
Returning freed pages 100 ms after they are freed keeps the peak flat in the rows at the same speed.
(jemalloc's ``background_thread`` did as well, but crashed a process of the test suite once: not used.)
polars reads the setting once, as it loads (``_RJEM_MALLOC_CONF``, appended to its own defaults, so
these keys win); a setting already in the environment is kept as it is.
"""

from __future__ import annotations

import os
from typing import Final

#: jemalloc's settings for polars: freed pages go back to the system 100 ms after they are freed.
JEMALLOC_CONF: Final = "dirty_decay_ms:100,muzzy_decay_ms:0"

os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)

import polars as pl  # noqa: E402  (after the allocator's settings, which it reads as it loads)

__all__ = ["JEMALLOC_CONF", "pl"]
