"""Wallet use cases: ledger writes (ledger), prepaid debits inside a fold (charging), monthly grants (grants)."""
