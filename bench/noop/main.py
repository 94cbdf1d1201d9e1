"""The floor of the serving benchmark: a function that does nothing, served exactly like the real ones."""

import flask
import functions_framework


@functions_framework.http
def noop(request: flask.Request) -> flask.Response:
    return flask.Response('{"ok":true}', status=200, mimetype="application/json")
