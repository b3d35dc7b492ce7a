"""Accounts: people, bots and externally issued identities, and what each may do."""
