"""Drafts: short-lived text an app parks between sessions, encrypted at rest."""
