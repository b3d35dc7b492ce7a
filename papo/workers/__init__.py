"""The arq worker: background jobs whose status events flow back to clients."""
