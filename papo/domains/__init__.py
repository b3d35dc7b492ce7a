"""Business domains, one folder each: model, use cases, store, handlers and jobs."""
