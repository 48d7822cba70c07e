"""Load compiled functions from numba's cache without numba's one-time start.

numba's first cache load in a process (like its first compile) begins with a "refresh" of its
target context: it imports and registers every typing and lowering table numba has (NumPy's
array functions, random generators, linear algebra, typed containers, ...), about 0.1 s of a
worker's start.  Those tables are what a *compile* needs; a function loaded from the cache is
machine code already and needs only numba's runtime (its memory allocator) and the symbols
numba's own modules register for the code to link against.  With
:func:`install_cache_loader`, every cache load of the process does just that: a new worker's
kernels load in its first tens of milliseconds, and the coordinator, which runs no compiled
code, no longer starts numba before forking the workers.

Only cache loads change: a function that is not in the cache (or a type it was not compiled
for) is compiled as usual, with numba's full start at the first compile of the process.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["install_cache_loader"]

_ABSENT = object()


def _load_runtime(target_context: Any) -> None:
    """What a cached function needs of numba's start: the runtime and the linked symbols."""
    from numba.core.runtime import nrt

    nrt.rtsys.initialize(target_context)  # the allocator's symbols (NRT_*)
    # The only table whose import registers symbols for compiled code to link against (the
    # hash secrets): a cached function that hashes would not link without it.
    import numba.cpython.hashing  # noqa: F401


def install_cache_loader() -> bool:
    """Have this process's numba cache loads skip the registry refresh (see the module's text).

    Idempotent.  Nothing is changed when numba is not loaded (the kernels run without it) or
    when its internals are not the expected ones (numba then loads as usual).

    Returns
    -------
    bool
        Whether the loader is installed.
    """
    if "numba" not in sys.modules:
        return False
    try:
        from numba.core import caching

        real_load = caching.Cache.load_overload
    except (ImportError, AttributeError):  # another numba: it loads as usual
        log.debug("numba's cache loader not found; loading as usual", exc_info=True)
        return False
    if getattr(real_load, "_saxsdog_cache_loader", False):
        return True

    def load_overload(self: Any, sig: Any, target_context: Any) -> Any:
        # numba's load_overload refreshes the context, then loads: the refresh is replaced
        # by the runtime alone for this call (an attribute of the instance, put back after;
        # a compile calls the class's refresh, the full one).
        own = vars(target_context)
        previous = own.get("refresh", _ABSENT)
        own["refresh"] = lambda: _load_runtime(target_context)
        try:
            return real_load(self, sig, target_context)
        finally:
            if previous is _ABSENT:
                own.pop("refresh", None)
            else:
                own["refresh"] = previous

    load_overload._saxsdog_cache_loader = True  # type: ignore[attr-defined]
    caching.Cache.load_overload = load_overload  # type: ignore[method-assign]
    return True
