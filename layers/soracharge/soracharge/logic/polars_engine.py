"""polars, loaded with the allocator settings of the import: import ``pl`` from here, never polars itself.

polars allocates with jemalloc, which keeps freed pages for reuse: by default a scan of segment after
segment leaves the process some 25 MB larger for each (measured: ``bench/import_throughput.py``, peak
memory growing by about 900 bytes a charge from 10,000 to 40,000 SIMs). Returning freed pages after
100 ms on jemalloc's background thread keeps the peak flat in the rows at the same speed (about 300
bytes a charge). polars reads the setting once, when it loads (``_RJEM_MALLOC_CONF``, appended to its
own defaults, so later keys win); a setting already in the environment is kept as it is.
"""

from __future__ import annotations

import os
from typing import Final

#: jemalloc's settings for polars: freed pages go back to the system 100 ms after they are freed.
JEMALLOC_CONF: Final = "background_thread:true,dirty_decay_ms:100,muzzy_decay_ms:0"

os.environ.setdefault("_RJEM_MALLOC_CONF", JEMALLOC_CONF)

import polars as pl  # noqa: E402  (after the allocator's settings, which it reads as it loads)

__all__ = ["JEMALLOC_CONF", "pl"]
