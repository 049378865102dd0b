"""wrapt, imported without loading the modules it imports only for functions autoperf never calls.

``wrapt.importer`` imports ``importlib.metadata`` (for its entry-point discovery) and
``wrapt.synchronization`` imports ``asyncio``, both at module level: ~15 and ~19 ms of start-up
(docs/performance.md), and asyncio must be imported by the program, when it does, for the asyncio
integration's hook to run then. So while wrapt imports, each not yet imported stands in
``sys.modules`` as a ``_Deferred`` module; afterwards the stand-ins leave ``sys.modules`` (the
program's own import loads the real module) and the references wrapt keeps forward every attribute
read to the real module, importing it on the first.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

_DEFERRED = ("importlib.metadata", "asyncio")


class _Deferred(types.ModuleType):
    """Stands in for a module (``__getattr__``: only names the stand-in lacks, so the import system's
    ``__name__``/``__spec__`` checks load nothing)."""

    def __getattr__(self, attr):
        name = self.__name__
        module = sys.modules.get(name)
        if module is None or isinstance(module, _Deferred):
            sys.modules.pop(name, None)
            module = importlib.import_module(name)
        return getattr(module, attr)


def _stand_in(name):
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    stand_in = _Deferred(name)
    stand_in.__spec__ = spec
    sys.modules[name] = stand_in
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, stand_in)   # kept: wrapt reads ``importlib.metadata``
    return stand_in


def _import_wrapt():
    stand_ins = [_stand_in(name) for name in _DEFERRED if name not in sys.modules]
    try:
        import wrapt
    finally:
        for stand_in in stand_ins:
            if stand_in is not None and sys.modules.get(stand_in.__name__) is stand_in:
                del sys.modules[stand_in.__name__]
    return wrapt


wrapt = _import_wrapt()
__all__ = ["wrapt"]
