"""Built-in weight artifacts (placeholder: being written)."""
