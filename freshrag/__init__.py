"""What belongs to the whole service rather than to one of its parts: its settings."""
