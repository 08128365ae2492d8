"""robosteer."""
