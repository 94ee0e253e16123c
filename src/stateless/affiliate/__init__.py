"""Affiliate: self-verifying referral codes, and conversions kept only as daily aggregates."""
