"""StoreKit: signed transactions, legacy receipts and App Store Server Notifications V2."""
