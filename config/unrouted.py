"""The answer to a websocket for a path nothing serves: 404, not a traceback and a 500 (Channels'
URLRouter raises for an unknown path)."""

from django.urls import re_path


async def no_such_websocket(scope, receive, send):
    if (await receive())["type"] != "websocket.connect":
        return
    if "websocket.http.response" in scope.get("extensions", {}):
        body = b"No websocket here.\n"
        await send({"type": "websocket.http.response.start", "status": 404,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close"})


# Last in a websocket URLRouter's list: it matches every path.
any_other_websocket = re_path(r"", no_such_websocket)
