"""Settings and the default connector catalogue: the one place that reads the environment."""

from config.catalogue import ConnectorSpec, default_catalogue
from config.settings import Settings, get_settings

__all__ = ["ConnectorSpec", "Settings", "default_catalogue", "get_settings"]
