"""autoperf.yaml: finding, loading and validating it.

``import autoperf.config`` stays cheap: PyYAML, dataclasses and the section providers are only
imported by :func:`load_config` / :func:`json_schema` / ``DEFAULTS``.
"""
import os

from .capture import CaptureError, CapturePath, compile_capture

__all__ = [
    "Config", "ConfigError", "TargetSpec", "CapturePath", "CaptureError", "compile_capture",
    "load_config", "find_config", "json_schema", "parse_target", "DEFAULTS", "CONFIG_FILENAME",
]
CONFIG_FILENAME = "autoperf.yaml"
ENV_VAR = "AUTOPERF_CONFIG"


class ConfigError(Exception):
    """The config is invalid; ``.errors`` holds one ``file:line:col: path: message`` per problem."""

    def __init__(self, errors):
        self.errors = list(errors)
        super().__init__("invalid autoperf config:\n  " + "\n  ".join(self.errors))


class Config:
    """A loaded config: ``.path`` (Path or None), ``.data`` (plain dict, defaults applied), ``.targets``."""

    def __init__(self, data, path=None, targets=()):
        self.path, self.data, self.targets = path, data, list(targets)

    def integration(self, name):
        """Options of integration ``name`` (defaults applied), always with ``enabled`` (default True)."""
        options = self.data.get("integrations", {}).get(name)
        if options is None:
            from .spec import integration_options

            options = integration_options(name).empty()
        return options

    def __getitem__(self, section):
        return self.data[section]

    def __repr__(self):
        return f"Config(path={str(self.path) if self.path else None!r}, targets={len(self.targets)})"


def find_config(explicit=None, script=None):
    """The config file to use: ``explicit`` -> ``$AUTOPERF_CONFIG`` -> ``./autoperf.yaml`` -> next to ``script``.

    An explicit path or the environment variable is returned even if the file is missing (loading
    it then reports the problem); the two others only when they exist. None when there is none.
    """
    from pathlib import Path

    for chosen in (explicit, os.environ.get(ENV_VAR)):
        if chosen:
            return Path(chosen)
    if os.path.isfile(CONFIG_FILENAME):
        return Path(CONFIG_FILENAME)
    if script:
        beside = Path(os.path.abspath(script)).parent / CONFIG_FILENAME
        if beside.is_file():
            return beside
    return None


def load_config(path):
    """Load and validate ``path`` (None: the defaults). Raises :class:`ConfigError` listing every problem."""
    from ._load import load

    return load(path)


def json_schema():
    """A JSON Schema (draft 2020-12) of autoperf.yaml, for editors and documentation."""
    from .spec import root_schema

    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "autoperf.yaml",
        "description": "Configuration of autoperf, the zero-code performance monitor for asyncio services.",
    }
    out.update(root_schema().json_schema())
    return out


def __getattr__(name):
    if name == "DEFAULTS":  # computed on use (imports the section providers); a fresh copy each time
        from .spec import root_schema

        return root_schema().empty()
    if name == "TargetSpec":
        from .targetspec import TargetSpec

        return TargetSpec
    if name == "parse_target":
        from .spec import parse_target

        return parse_target
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
