"""dmuc-admin: the operator's command line (import from Prosody, inspect the store)."""
