"""Sans-IO pieces of the Durable Streams HTTP protocol, shared by the server and the client."""
