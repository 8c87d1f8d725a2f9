"""POST /portal-sessions: customers, return URLs, locales, flows, configurations."""

# Registers portal's start-up checks with Settings.check() whenever portal/ is in use.
from portal_service.portal import startup as startup
