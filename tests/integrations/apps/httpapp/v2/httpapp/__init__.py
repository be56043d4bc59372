"""A plain http.server app, as a third party writes it: no livepatch in it (`python -m httpapp PORT`)."""
