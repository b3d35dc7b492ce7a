"""The wire contract, sans I/O: error codes, frame definitions and validation.

Nothing here imports the rest of papo or does I/O, so the contract can be tested on
bytes alone and reused by clients.
"""
