"""Ledger, invoicing and payments (see the ledger, invoicing and payments issues)."""
