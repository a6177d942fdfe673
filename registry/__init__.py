"""photoimmune.registry: vendors publish signed, versioned attack targets (TUF metadata).

Not built yet: the registry lands with its own issue (see docs/architecture.md)."""
