"""One module per resource: its representation model, its handlers, its routes."""
