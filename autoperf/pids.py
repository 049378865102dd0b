"""Process ids: is the process that left a file behind still running?"""
from __future__ import annotations

import os


def alive(pid: int) -> bool:
    """True when ``pid`` names a running process (ours or someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:     # someone else's process: alive
        return True
    return True
