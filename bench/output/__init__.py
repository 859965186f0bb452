"""Output: results folders on disk, charts and the report."""
