"""The peer stack for bench/peer-flask-session.sh: Flask + Flask-Session with
sessions in Redis, served by gunicorn. It mirrors Keel's session API closely
enough for a GET-throughput comparison:

  POST /api/session   body {"data": {...}}; starts a new server-side session
                      holding that data; 201, the session id in the `session`
                      cookie.
  GET  /api/session   the session's data as JSON (one Redis read per request);
                      401 without a valid session, like Keel.
  GET  /ready         200, for the bench script's readiness wait.

Like Keel (which refreshes a session's expiry at most once a minute), a read
does not write: SESSION_REFRESH_EACH_REQUEST is off, so a GET neither rewrites
the session in Redis nor sets a cookie.

Set PEER_REFRESH_EACH_REQUEST=1 for Flask-Session's default instead, where
every GET rewrites the session in Redis and resends the cookie.

Environment: REDIS_URL (required), SECRET_KEY, PEER_REFRESH_EACH_REQUEST (optional).
"""

import os

import redis
from flask import Flask, jsonify, request, session
from flask_session import Session

app = Flask(__name__)
app.config.update(
    SECRET_KEY=os.environ.get("SECRET_KEY", "keel-bench-peer-not-a-secret"),
    SESSION_TYPE="redis",
    SESSION_REDIS=redis.Redis.from_url(os.environ["REDIS_URL"]),
    SESSION_PERMANENT=True,
    PERMANENT_SESSION_LIFETIME=24 * 60 * 60,  # Keel's default idle timeout
    SESSION_REFRESH_EACH_REQUEST=os.environ.get("PEER_REFRESH_EACH_REQUEST", "0") == "1",
)
Session(app)


@app.post("/api/session")
def create_session():
    body = request.get_json(silent=True) or {}
    data = body.get("data", {}) if isinstance(body, dict) else None
    if not isinstance(data, dict):
        return jsonify(error='The body must be a JSON object, optionally {"data": {...}}.'), 400
    session.clear()
    session["data"] = data
    return jsonify(data=data), 201


@app.get("/api/session")
def read_session():
    if "data" not in session:
        return jsonify(error="No session: create one with POST /api/session."), 401
    return jsonify(data=session["data"])


@app.get("/ready")
def ready():
    return jsonify(status="ready")
