"""stateless-backend: a privacy-first, multi-tenant backend where every byte of user data expires."""

__version__ = "0.1.0"
