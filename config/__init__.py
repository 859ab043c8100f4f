"""Settings and the connector catalogue: the one place that reads the environment."""

from config.catalogue import Catalogue, CatalogueError, ConnectorSpec, default_catalogue
from config.errors import ConfigError
from config.settings import Settings, get_settings

__all__ = [
    "Catalogue",
    "CatalogueError",
    "ConfigError",
    "ConnectorSpec",
    "Settings",
    "default_catalogue",
    "get_settings",
]
