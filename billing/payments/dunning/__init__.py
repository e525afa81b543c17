"""Dunning: collecting invoices that were not paid when they should have been.

``models`` holds the per-issuer policy and the per-invoice case with its steps, ``services`` runs
the steps (automatic charges of the saved default payment method, reminder emails, the write-off
at the end), ``selectors`` answers what operators look at (the dunning queue), and ``tasks`` wraps
the periodic sweep.
"""
