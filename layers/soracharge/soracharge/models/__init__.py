"""pydantic contracts at every boundary."""
