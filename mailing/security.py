"""HTTP hardening: security headers (flask-talisman) and, behind a proxy, the client's address.

Every page gets a Content-Security-Policy that allows only the app's own scripts, styles and
requests (htmx needs nothing more: the page behaviour lives in static/app.js and htmx is told
not to inject styles or evaluate code), plus nosniff, a referrer policy and frame denial. When
BASE_URL is https the session cookie is Secure and responses carry HSTS. HTTPS redirects are
left to the proxy: redirecting here would loop behind a proxy that speaks plain HTTP to us.
"""

from __future__ import annotations

from flask import Flask
from flask_talisman import DENY, SAMEORIGIN, Talisman
from werkzeug.middleware.proxy_fix import ProxyFix

CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

# Letter previews are framed by the app's own pages and send their own, stricter sandbox
# policy (see the views), which must not be replaced by the page policy.
FRAMED_ENDPOINTS = ("outgoing.preview", "sandbox.html")

PERMISSIONS = {"camera": "()", "microphone": "()", "geolocation": "()"}


def init_security(app: Flask) -> None:
    """Call after the blueprints are registered (per-view options attach to their views)."""
    hops = int(app.config.get("PROXY_HOPS") or 0)
    if hops > 0:
        # Trust X-Forwarded-For/-Proto from that many proxies, so that login throttling sees the
        # client's address and HSTS sees https, and nobody else can forge them.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    secure = bool(app.config.get("SESSION_COOKIE_SECURE"))
    # HSTS follows the public address, not the cookie setting (which may be off to try the
    # app over plain http); Talisman sends it only on requests that arrived over https.
    hsts = str(app.config.get("BASE_URL", "")).lower().startswith("https://")
    # One instance per app: Talisman keeps its options (and the app) on itself.
    talisman = Talisman(
        app,
        force_https=False,
        strict_transport_security=hsts,
        strict_transport_security_include_subdomains=False,  # other hosts of the domain are not ours
        session_cookie_secure=secure,
        session_cookie_samesite=app.config.get("SESSION_COOKIE_SAMESITE", "Lax"),
        content_security_policy=CSP,
        frame_options=DENY,
        referrer_policy="same-origin",
        permissions_policy=PERMISSIONS,
    )
    app.extensions["talisman"] = talisman
    for endpoint in FRAMED_ENDPOINTS:
        view = app.view_functions.get(endpoint)
        if view is not None:
            # Every per-view option spelled out: Talisman fills missing ones into this dict,
            # which the view function (shared by every app in the process) keeps.
            talisman(force_https=False, frame_options=SAMEORIGIN, frame_options_allow_from=None,
                     content_security_policy=None, content_security_policy_nonce_in=[],
                     permissions_policy=PERMISSIONS, document_policy={}, feature_policy={})(view)
