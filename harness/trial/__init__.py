"""One trial, no Ray: setup -> train -> evaluate -> save, always ending in a record (`run`)."""
