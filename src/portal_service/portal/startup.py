"""What portal/ checks of the settings before the service starts, registered with config.py's
start-up checks: config.py holds the plain values and imports nothing of portal/."""

from __future__ import annotations

import weakref
from functools import lru_cache

from portal_service.config import ConfigError, Settings, register_startup_check
from portal_service.portal.configs import PortalConfigError, PortalConfigFile, load_portal_config
from portal_service.portal.return_urls import ReturnUrlAllowlist


def return_url_allowlist(settings: Settings) -> ReturnUrlAllowlist:
    """PORTAL_RETURN_URL_ALLOWLIST parsed; ValueError names a bad entry."""
    return _parsed_allowlist(tuple(settings.portal_return_url_allowlist))


# Parsed once per list of entries: POST /portal-sessions reads it on every request.
@lru_cache(maxsize=16)
def _parsed_allowlist(entries: tuple[str, ...]) -> ReturnUrlAllowlist:
    return ReturnUrlAllowlist.from_entries(entries)


@register_startup_check
def check_portal_settings(settings: Settings) -> None:
    try:
        # Parsed here, not only on a portal request: a bad entry must stop the start.
        allowlist = return_url_allowlist(settings)
    except ValueError as exc:
        raise ConfigError(f"PORTAL_RETURN_URL_ALLOWLIST: {exc}") from None
    if settings.portal_default_return_url is not None and not allowlist.allows(
        settings.portal_default_return_url
    ):
        raise ConfigError("PORTAL_DEFAULT_RETURN_URL is not in PORTAL_RETURN_URL_ALLOWLIST")
    portal_config(settings)


# What the start-up check parsed, per Settings object (Settings is plain data and holds only
# the path): the app's lifespan and the commands take the file from here, so it is read once
# per process start however many times the settings are checked.
_PARSED: dict[int, tuple[weakref.ref[Settings], str, PortalConfigFile]] = {}


def portal_config(settings: Settings) -> PortalConfigFile | None:
    """PORTAL_CONFIG_FILE parsed (None when it is not set), read once for these settings;
    ConfigError (one line) if the file cannot be used."""
    path = settings.portal_config_file
    if path is None:
        return None
    key = id(settings)
    known = _PARSED.get(key)
    if known is not None and known[0]() is settings and known[1] == path:
        return known[2]
    try:
        parsed = load_portal_config(path)
    except PortalConfigError as exc:
        raise ConfigError(str(exc)) from None
    _PARSED[key] = (weakref.ref(settings, lambda _: _PARSED.pop(key, None)), path, parsed)
    return parsed
