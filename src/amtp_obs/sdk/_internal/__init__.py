"""SDK internals: configuration (`config`) and the per-call recorder (`call`). Not public API."""
