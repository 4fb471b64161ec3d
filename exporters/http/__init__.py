"""HTTP routes: NDJSON batches to any endpoint, and the Elasticsearch ``_bulk`` API."""
