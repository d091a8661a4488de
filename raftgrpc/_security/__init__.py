"""Transport security: TLS and mTLS credentials, reloaded from disk when they change."""
