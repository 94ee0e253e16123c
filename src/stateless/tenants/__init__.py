"""Tenants (apps), their keys, their configuration, and the request checkpoint that verifies them."""
