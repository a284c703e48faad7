"""What stackhub's hub-managed services share: hub login, who may call, JSON replies, routes.

A service (``sessions_service``, ...) subclasses ``ServiceHandler`` and says who is let in with
``allowed(model)`` (the hub has already checked the service's access scope). Identification is
asynchronous (``prepare``), so a slow hub never blocks the service's event loop. Without
credentials an API call gets 401 and a page redirects to the hub's login; a user or service that is
identified but not allowed gets 403 with ``denied_message``.
"""

from __future__ import annotations

import json
import logging

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import ioloop, web

templates = jinja2.Environment(
    loader=jinja2.PackageLoader("spawner", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
)


def text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


class ServiceHandler(HubOAuthenticated, web.RequestHandler):
    api = True  # False for pages: redirect to the hub's login instead of 401
    hub_auth_class = HubOAuth

    @property
    def ctx(self):
        return self.settings["ctx"]

    def allowed(self, model: dict) -> bool:
        """Whether an identified user or service (with the access scope) may use this handler."""
        return True

    def denied_message(self, model: dict) -> str:
        return f"{model.get('kind', 'user')} {model['name']} is not allowed here"

    async def prepare(self):
        model = await self.hub_auth.get_user(self, sync=False)
        denied = None
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                denied, model = model, None
        if model is not None and not self.allowed(model):
            denied, model = model, None
        self._hub_auth_user_cache = model
        if model is not None:
            return
        if denied:
            raise web.HTTPError(403, self.denied_message(denied))
        if self.api:
            raise web.HTTPError(401, "log in, or send a token: Authorization: token <token>")
        self.redirect(self.get_login_url())

    @property
    def who(self) -> str:
        """The name the audit log records: a user's name, or ``service:<name>``."""
        m = self.current_user
        return f"service:{m['name']}" if m.get("kind") == "service" else m["name"]

    def body(self) -> dict:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError:
            raise web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise web.HTTPError(400, "the request body must be a JSON object")
        return data

    def send(self, data, status: int = 200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

    def render_page(self, template: str, **kw):
        self.set_header("Cache-Control", "no-store")
        self.finish(templates.get_template(template).render(
            prefix=self.ctx.prefix, who=self.who, xsrf=text(self.xsrf_token), **kw))

    def write_error(self, status_code, **kwargs):
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = self._reason
        if isinstance(exc, web.HTTPError) and exc.log_message:
            message = exc.log_message % exc.args if exc.args else exc.log_message
        self.send({"status": status_code, "message": message}, status_code)


def routes(prefix: str, page, api: list[tuple], not_found=ServiceHandler) -> list[tuple]:
    """The page, its login callback, the API handlers (paths relative to ``<prefix>api/``), then 404."""

    class NotFound(not_found):
        async def prepare(self):
            await super().prepare()
            raise web.HTTPError(404, f"no such endpoint: {self.request.method} {self.request.path}")

    return [
        (prefix, page),
        (prefix.rstrip("/"), web.RedirectHandler, {"url": prefix}),
        (prefix + "oauth_callback", HubOAuthCallbackHandler),
        *[(prefix + "api/" + path, *rest) for path, *rest in api],
        (prefix + "api/.*", NotFound),
    ]


def serve(app: web.Application, port: int, log: logging.Logger, **listen):
    app.listen(port, address="0.0.0.0", **listen)
    log.info("listening on :%d", port)
    ioloop.IOLoop.current().start()
