"""Event-log generators for the quality suite, written apart from funnelcast's own simulator."""
