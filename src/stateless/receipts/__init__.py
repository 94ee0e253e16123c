"""Deletion receipts' public side: the JSON Web Key Set that verifies them."""
