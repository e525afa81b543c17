"""API-key check cost: our SHA-256 lookup vs Django's default (PBKDF2) password hasher."""

from __future__ import annotations

import hashlib
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aggregator.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from django.contrib.auth.hashers import PBKDF2PasswordHasher  # noqa: E402

from bench._timing import best_of  # noqa: E402

raw = f"agk_{secrets.token_hex(6)}_{secrets.token_hex(24)}"
stored = hashlib.sha256(raw.encode()).hexdigest()
hasher = PBKDF2PasswordHasher()
encoded = hasher.encode(raw, hasher.salt())

ours = best_of(lambda: secrets.compare_digest(stored, hashlib.sha256(raw.encode()).hexdigest()), number=20000)
baseline = best_of(lambda: hasher.verify(raw, encoded), number=5)
print(
    f"sha256 key check: {ours * 1e6:.2f} µs; PBKDF2 baseline: {baseline * 1e3:.1f} ms; speed-up x{baseline / ours:,.0f}"
)
