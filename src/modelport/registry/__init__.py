"""The registry: models, their immutable versions and audited aliases (``models``), and the API keys that name consumers and carry scopes (``keys``)."""
