"""The user's own package of the README's "Your own model and data" example."""
