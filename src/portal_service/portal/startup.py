"""What portal/ checks of the settings before the service starts, registered with config.py's
start-up checks: config.py holds the plain values and imports nothing of portal/."""

from __future__ import annotations

from functools import lru_cache

from portal_service.config import ConfigError, Settings, register_startup_check
from portal_service.portal.configs import PortalConfigError, load_portal_config
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
    if settings.portal_config_file is not None:
        try:
            load_portal_config(settings.portal_config_file)
        except PortalConfigError as exc:
            raise ConfigError(str(exc)) from None
