"""Payments: saved payment methods and the gateway contract (Stripe, PayPal and a test gateway)."""
