"""A socketserver line server, as a third party writes it: no livepatch in it (`python -m lineapp PORT`)."""
