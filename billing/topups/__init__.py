"""Automatic top-ups: rules that watch a balance, and the charges they make through a gateway."""
