"""Identity: the network CA, who a peer is, and mutual-TLS credentials."""
