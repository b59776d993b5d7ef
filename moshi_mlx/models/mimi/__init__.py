"""models/mimi package."""
