"""multiprocessing.Pool jobs: the process_pool integration applied to ``multiprocessing.pool``."""
from autoperf.integrations.process_pool import OPTIONS, patch, pool_stats, unpatch  # noqa: F401
from autoperf.integrations.process_pool import POOL_MODULE as MODULE
from autoperf.integrations.process_pool import WRAPS as _ALL

NAME = "multiprocessing_pool"
REQUIRES = None
DEFAULT_ENABLED = True
WRAPS = _ALL[MODULE]
