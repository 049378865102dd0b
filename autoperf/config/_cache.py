"""A cache of validated configs, so ``autoperf run`` and every child process skip YAML and validation.

Importing PyYAML and the section schemas costs ~50 ms — most of ``autoperf run``'s start-up budget —
and every spawned worker would pay it again. A validated config is stored with ``marshal`` under
a key made of: the file's bytes, the Python version, and the modification times of the code that
defines the schema. Any change to one of those is a miss; an unwritable cache directory just means
no cache. A config that reads the environment (``${NAME}``) is never cached: its expanded values
may be secrets (a DSN's password), and neither they nor a hash of them belong on disk. Files are
private to the user (0600, in a 0700 directory).
"""
try:  # the C blake2 module alone; `hashlib` also loads OpenSSL (~4 ms of start-up)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b
import marshal
import os
import re
import sys

_ENV_REF = re.compile(rb"(?<!\$)\$\{")
_VERSION = 1


def _directory():
    explicit = os.environ.get("AUTOPERF_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "autoperf")


def _code_stamp():
    """Modification times of the modules that define what a valid config is."""
    here = os.path.dirname(os.path.abspath(__file__))
    package = os.path.dirname(here)
    stamp = []
    for folder in (here, os.path.join(package, "integrations")):
        try:
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if entry.name.endswith(".py"):
                    stamp.append(f"{entry.name}:{entry.stat().st_mtime_ns}")
        except OSError:
            pass
    for rel in ("analysis/slo.py", "alerts/__init__.py", "store/__init__.py", "export/__init__.py",
                "export/otlp_config.py"):
        try:
            stamp.append(f"{rel}:{os.stat(os.path.join(package, rel)).st_mtime_ns}")
        except OSError:
            pass
    return "|".join(stamp)


def key(text: bytes) -> str:
    digest = blake2b(digest_size=16)
    digest.update(text)
    from .spec import integration_table

    table = sorted((integration_table() or {}).values())
    digest.update(f"\0{_VERSION}\0{sys.version}\0{_code_stamp()}\0{table}".encode())
    return digest.hexdigest()


def enabled():
    return os.environ.get("AUTOPERF_CONFIG_CACHE", "1") not in ("0", "false", "no", "off")


def cacheable(text: bytes) -> bool:
    """False for a config that reads the environment (``$${`` is a literal, not a reference)."""
    return _ENV_REF.search(text) is None


def read(cache_key):
    if not enabled():
        return None
    try:
        with open(os.path.join(_directory(), f"config-{cache_key}.marshal"), "rb") as handle:
            data, lines = marshal.load(handle)
        return data, lines
    except (OSError, EOFError, ValueError, TypeError):
        return None


def write(cache_key, config, lines):
    if not enabled():
        return
    directory = _directory()
    target = os.path.join(directory, f"config-{cache_key}.marshal")
    try:
        payload = marshal.dumps((config.data, list(lines)))
    except ValueError:  # a value marshal cannot store: no cache for this config
        return
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
            handle.write(payload)
        os.replace(temporary, target)  # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass
