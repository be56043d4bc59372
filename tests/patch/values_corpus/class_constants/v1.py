class Adjustments:
    connection_limit = 100
    channel_timeout = 120
    host = "127.0.0.1"

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)

    def describe(self):
        return f"{self.host} limit={self.connection_limit} timeout={self.channel_timeout}"


LIVE = Adjustments(host="0.0.0.0")
