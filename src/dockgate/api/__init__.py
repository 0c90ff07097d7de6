"""The Engine API as the daemon reads it: the request-target, the route table (which operation a
request runs), and the daemon's JSON answers where the gateway reads them."""
