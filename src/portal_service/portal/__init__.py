"""POST /portal-sessions: customers, return URLs, locales, flows, configurations."""
