class Adjustments:
    connection_limit = 50
    channel_timeout = 120
    host = "127.0.0.1"
    url_prefix = ""

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    def describe(self):
        return f"{self.url_prefix}{self.host} limit={self.connection_limit} timeout={self.channel_timeout}"

    def limits(self):
        return (self.connection_limit, self.channel_timeout)


LIVE = Adjustments(host="0.0.0.0")
