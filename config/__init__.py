"""Settings read from the environment, and the JSON Schemas of webhook deliveries."""

from config.settings import SETTINGS, Settings, SettingsError, load_settings

__all__ = ["SETTINGS", "Settings", "SettingsError", "load_settings"]
