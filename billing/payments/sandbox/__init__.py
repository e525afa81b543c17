"""Local stand-ins for payment providers, for tests and the offline demo."""
