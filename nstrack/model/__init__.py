"""Pure model: namespace types, events, the replica, mode decisions. No kernel access here."""
