"""Index stores behind one interface: embedded LanceDB (default) and OpenSearch."""
