"""Values as they cross the wire: input bounds, the one timestamp format, the URL rules for settings."""
