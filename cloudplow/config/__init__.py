"""Configuration: one schema, loaded and validated into frozen dataclasses.

`schema.py` describes every key, `load.py` turns a YAML file into a `Config`
(or a ConfigError listing every problem), `sample.py` renders
`config.yaml.sample` and the README's reference table from the schema. The
rest of cloudplow imports from here and never reads YAML itself.
"""

from cloudplow.config.load import (
    Account,
    Check,
    Config,
    ConfigError,
    Filters,
    Quota,
    Schedule,
    Uploader,
    default_config_path,
    load_config,
    summarize,
)

__all__ = [
    "Account",
    "Check",
    "Config",
    "ConfigError",
    "Filters",
    "Quota",
    "Schedule",
    "Uploader",
    "default_config_path",
    "load_config",
    "summarize",
]
