"""The networks: the rating model, the ranking model, and their model files."""
