"""A cache of validated configs, so ``autoperf run`` and every child process skip YAML and validation.

Importing PyYAML and the section schemas costs ~50 ms — most of ``autoperf run``'s start-up budget —
and every spawned worker would pay it again. A validated config is stored with ``marshal`` under
a key made of: the file's bytes, the values of the environment variables it interpolates, the
Python version, and the modification times of the code that defines the schema. Any change to
one of those is a miss; an unwritable cache directory just means no cache.
"""
try:  # the C blake2 module alone; `hashlib` also loads OpenSSL (~4 ms of start-up)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover
    from hashlib import blake2b
import marshal
import os
import re
import sys

_ENV_REF = re.compile(rb"\$\{([A-Za-z_][A-Za-z0-9_]*)")
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
    for rel in ("analysis/slo.py", "alerts/__init__.py", "store/__init__.py"):
        try:
            stamp.append(f"{rel}:{os.stat(os.path.join(package, rel)).st_mtime_ns}")
        except OSError:
            pass
    return "|".join(stamp)


def key(text: bytes) -> str:
    digest = blake2b(digest_size=16)
    digest.update(text)
    for name in sorted(set(_ENV_REF.findall(text))):
        value = os.environ.get(name.decode())
        digest.update(b"\0" + name + b"=" + (b"\1" + value.encode() if value is not None else b"\2"))
    from autoperf.integrations import REGISTRY

    digest.update(f"\0{_VERSION}\0{sys.version}\0{_code_stamp()}\0{sorted(REGISTRY.items())}".encode())
    return digest.hexdigest()


def enabled():
    return os.environ.get("AUTOPERF_CONFIG_CACHE", "1") not in ("0", "false", "no", "off")


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
        os.makedirs(directory, exist_ok=True)
        temporary = f"{target}.{os.getpid()}.tmp"
        with open(temporary, "wb") as handle:
            handle.write(payload)
        os.replace(temporary, target)  # atomic: a concurrent reader sees all or nothing
    except OSError:
        pass
