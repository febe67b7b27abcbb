"""A cap on HTTP request bodies, applied before Django reads them.

Django reads a whole body into a temporary file (spilling to disk) before any view or
DATA_UPLOAD_MAX_MEMORY_SIZE sees it: a client could make the portal write gigabytes. Bodies
larger than DATA_UPLOAD_MAX_MEMORY_SIZE (VDI_MAX_REQUEST_BODY_BYTES, 1 MiB; the portal and
the admin take forms, never uploads) are answered 413 here: at once when Content-Length says
so, or as soon as a streamed body passes the limit.
"""

from django.conf import settings

TOO_LARGE = b"Request body too large.\n"


async def _answer_413(send):
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(TOO_LARGE)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": TOO_LARGE})


def limit_request_bodies(app):
    async def limited(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > limit:
            return await _answer_413(send)
        received = 0

        async def receive_within_limit():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    await _answer_413(send)
                    return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            return message

        return await app(scope, receive_within_limit, send)

    return limited
