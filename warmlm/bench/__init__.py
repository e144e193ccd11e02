"""`warmlm bench`: measure the server against the raw llama.cpp ceiling of the same machine."""
