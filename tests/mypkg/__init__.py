"""The user's own package of the "Your own model and data" example (docs/configuration.md)."""
