"""Web Push (RFC 8030) for web apps and home-screen web apps: subscriptions, encryption, VAPID."""
