"""Driver processes: the lean Socket.IO client, the stock-client driver, the wire protocol, the reference server."""
