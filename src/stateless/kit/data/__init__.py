"""The data path: engine and sessions, the raw-driver statements, the tenant-scoped repository base, the verified tenant."""
