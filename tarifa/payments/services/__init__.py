"""Payment use cases: invoices (create, cancel, monthly close), schedule (check intervals),
checking (claim due checks, ask the gateway, apply what it says), credentials, notifications."""
