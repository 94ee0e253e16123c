"""How the process runs: the background jobs under one leader, graceful serving and what serve prints."""
