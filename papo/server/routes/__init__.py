"""REST endpoints, one module per domain, each a list of declarative ``Endpoint``s."""
