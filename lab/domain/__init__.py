"""Pure models of the lab: definitions, identities, power states, naming rules. No I/O here."""
