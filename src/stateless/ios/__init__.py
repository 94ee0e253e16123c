"""iOS device tokens and APNs push: tokens kept encrypted, device ids as keyed hashes."""
