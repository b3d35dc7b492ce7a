"""Peer servers for the side-by-side benchmark, each written the idiomatic way."""
