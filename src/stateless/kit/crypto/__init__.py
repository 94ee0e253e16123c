"""Keys derived from SECRET_KEY: keyed hashes, sealed values, signed deletion receipts."""
