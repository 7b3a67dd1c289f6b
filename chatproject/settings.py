"""Settings for the chat server, all read from the environment in this one place.

Every variable has an embedded default that needs no other service: SQLite,
the in-memory channel layer and the offline `local` model.
"""

import os
import tempfile
import warnings
from datetime import timedelta
from pathlib import Path

import environ
from django.utils.csp import CSP

from chatproject.secrets import secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)
# A file-kept random key when SECRET_KEY is unset: `migrate` then `daphne`
# works with no configuration, and no key written in the repository ever signs.
SECRET_KEY_FILE = Path(env.str("SECRET_KEY_FILE", default=str(BASE_DIR / ".secret_key")))
SECRET_KEY = secret_key(os.environ.get("SECRET_KEY"), SECRET_KEY_FILE)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list(
    "CSRF_TRUSTED_ORIGINS",
    default=[f"http://{host}:{port}" for host in ("127.0.0.1", "localhost") for port in (8000,)],
)
# Origins (`scheme://host[:port]`) whose pages may open sockets, beside the server's own.
ALLOWED_ORIGINS = env.list("ALLOWED_ORIGINS", default=[])

# --- HTTPS ------------------------------------------------------------------
# HTTPS=1 turns on every setting below at once; each can still be set alone.
HTTPS = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=HTTPS)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=HTTPS)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=HTTPS)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
# Behind a TLS-terminating proxy that sets X-Forwarded-Proto (and strips it from clients).
if env.bool("BEHIND_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "axes",
    "chat",
    "agents",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Last, so that it turns a lockout raised anywhere above into its 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
ASGI_APPLICATION = "chatproject.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
_db = DATABASES["default"]
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the writer; IMMEDIATE takes the write lock at
    # BEGIN so concurrent writers queue on the busy timeout instead of failing
    # with "database is locked" when they upgrade a read lock.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file test database, so a daphne process started by a test sees it;
    # one per test process, so concurrent runs do not share it.
    _db["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"chat-test-{os.getpid()}.sqlite3")}
else:
    _db["CONN_HEALTH_CHECKS"] = True
    _db.setdefault("TEST", {})["NAME"] = "test_" + _db["NAME"]
# Persistent connections, on SQLite too: Channels runs every database call of
# a process through one thread and closes obsolete connections around each;
# with CONN_MAX_AGE=0 it reconnects on every call (~200 ops/s on PostgreSQL,
# half the database thread's time on SQLite).
_db["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=600)

# How long a database outage (a PostgreSQL restart) each turn write rides
# out, retrying with backoff, before the turn gives up on it.
DB_OUTAGE_SECONDS = env.float("DB_OUTAGE_SECONDS", default=10.0)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Channel layer --------------------------------------------------------

REDIS_URL = env.str("REDIS_URL", default="")
# Longest silence on a Redis socket before redis-py gives up on it. It must
# exceed channels-redis's 5 s blocking pop, or every idle WebSocket dies with
# a TimeoutError after 5 s.
REDIS_SOCKET_TIMEOUT = env.float("REDIS_SOCKET_TIMEOUT", default=15.0)
# How long a Redis outage (a restart) every Redis command rides out by
# reconnecting and retrying, instead of failing a socket or a frame.
REDIS_OUTAGE_SECONDS = env.float("REDIS_OUTAGE_SECONDS", default=10.0)
# How often a socket checks that the layer still lists it in its thread's
# group (a Redis restart forgets every member) and joins again if not.
SOCKET_REJOIN_SECONDS = env.float("SOCKET_REJOIN_SECONDS", default=5.0)
# Redis connections one pool of a process opens at most (redis-py's default
# is 100, past which a command fails at once: a burst of sockets connecting
# to one process needs more).
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=1000)
REDIS_OPTIONS: dict = {}
if REDIS_URL:
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff

    _backoff_cap = 0.5
    REDIS_OPTIONS = {
        "socket_timeout": REDIS_SOCKET_TIMEOUT,
        "socket_connect_timeout": 2.0,
        "max_connections": REDIS_MAX_CONNECTIONS,
        # No CLIENT SETINFO: redis-py reads its version from the package
        # metadata for each new connection and sends it in two commands; a
        # burst of 221 rate checks opening connections waited 400 ms on it.
        "driver_info": None,
        # A pooled connection that died with a restart is reconnected and the
        # command sent again: without this, redis-py's pool retries nothing.
        "retry": Retry(ExponentialBackoff(cap=_backoff_cap, base=0.05), int(REDIS_OUTAGE_SECONDS / _backoff_cap) + 4),
    }
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_OPTIONS}], "capacity": 1000},
        },
        # Turn events between processes (agents.fanout): one PUBLISH per event,
        # received once per process holding sockets of the thread.
        "events": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, **REDIS_OPTIONS}]},
        },
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 1000}}}
# The layer alias turn events cross processes on; without it ("default" too
# when that layer is in memory) events only reach this process's sockets.
EVENTS_CHANNEL_LAYER = env.str("EVENTS_CHANNEL_LAYER", default="events" if REDIS_URL else "default")

# --- Agents ---------------------------------------------------------------

AGENT_PROVIDER = env.str("AGENT_PROVIDER", default="local")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
OPENAI_MODEL = env.str("OPENAI_MODEL", default="gpt-4o-mini")
LOCAL_MODEL_DELAY_MS = env.int("LOCAL_MODEL_DELAY_MS", default=30)
CHAT_MESSAGES_PER_MINUTE = env.int("CHAT_MESSAGES_PER_MINUTE", default=30)
# A process's delta writer starts a commit at most this often (agents.writer):
# under load each commit carries the pieces of many streams.
DELTA_COMMIT_INTERVAL_MS = env.float("DELTA_COMMIT_INTERVAL_MS", default=40)
# The message_delta events per second a writer aims at over all its streams:
# past that many streams per interval, the interval grows (each event costs a
# frame per socket, and a share of a commit), up to DELTA_COMMIT_INTERVAL_MAX_MS,
# which bounds latency. At 250 a process keeps 40 ms up to 10 streams and
# reaches 70 ms at 18: against 2,000, the cluster's CPU at 20 streams fell by
# about a fifth and its latency p50 rose from ~35 to ~68 ms (bench/README.md).
DELTA_EVENTS_PER_SECOND = env.float("DELTA_EVENTS_PER_SECOND", default=250)
# A word waits up to one interval before its commit starts: at 100 ms that
# was half of a 200 ms latency budget; 70 leaves 30 ms more for the commit,
# the Redis hop and the relay. At 50, 626 streams' extra frames overloaded
# two cores (bench/README.md, the runs of 2026-12-07).
DELTA_COMMIT_INTERVAL_MAX_MS = env.float("DELTA_COMMIT_INTERVAL_MAX_MS", default=70)
# The GIL switch interval of a serving process (agents.process): each
# database hop waits up to this long for a busy event loop.
GIL_SWITCH_INTERVAL_MS = env.float("GIL_SWITCH_INTERVAL_MS", default=0.5)
# Container allocations between two young-generation collections of a serving
# process (Python's default is 700). At 700, a burst's short-lived frames and
# futures were promoted and set off full collections: 15 in seven steps of up
# to 442 streams, up to 97 ms each; at 10,000 none ran while streaming, and
# the streams' latency p99 at 442 fell from 139 to 108 ms (bench/README.md).
GC_GEN0_THRESHOLD = env.int("GC_GEN0_THRESHOLD", default=10_000)

# Turns run in worker processes (`manage.py run_agent_worker`, needs
# REDIS_URL) instead of the web process that received the message.
AGENT_WORKERS = env.bool("AGENT_WORKERS", default=False)
# Receives a worker process keeps in flight on the turns channel at once.
AGENT_WORKER_LISTENERS = env.int("AGENT_WORKER_LISTENERS", default=64)
# A user message with no answer started after this long had its start lost
# (a worker killed between taking it and starting it): the sweeper sends it
# again; after TURN_START_DEADLINE_SECONDS the turn ends `interrupted`.
TURN_REDISPATCH_SECONDS = env.float("TURN_REDISPATCH_SECONDS", default=15.0)
TURN_START_DEADLINE_SECONDS = env.float("TURN_START_DEADLINE_SECONDS", default=45.0)

# Model calls (tool rounds) one turn may make before it stops.
AGENT_MAX_STEPS = env.int("AGENT_MAX_STEPS", default=8)
# Characters of earlier messages sent to a model as history.
AGENT_HISTORY_CHARS = env.int("AGENT_HISTORY_CHARS", default=24000)
# Retries of a model call that failed before its first token.
AGENT_MAX_RETRIES = env.int("AGENT_MAX_RETRIES", default=3)
AGENT_CONNECT_TIMEOUT = env.float("AGENT_CONNECT_TIMEOUT", default=10.0)
# Longest silence between two streamed chunks before the call fails.
AGENT_READ_TIMEOUT = env.float("AGENT_READ_TIMEOUT", default=60.0)

# A running turn touches its heartbeat this often; a streaming message whose
# heartbeat is older than TURN_STALE_SECONDS belongs to a dead process and the
# sweeper (every TURN_SWEEP_SECONDS) finalizes it `interrupted`.
TURN_HEARTBEAT_SECONDS = env.float("TURN_HEARTBEAT_SECONDS", default=2.0)
TURN_STALE_SECONDS = env.float("TURN_STALE_SECONDS", default=30.0)
TURN_SWEEP_SECONDS = env.float("TURN_SWEEP_SECONDS", default=10.0)
# On SIGTERM a process's running turns get this long to finish; the rest end
# `interrupted` (announced), then its sockets are closed with 4012 (service restart).
TURN_DRAIN_SECONDS = env.float("TURN_DRAIN_SECONDS", default=5.0)

# Price per million tokens in micro-dollars: {"model": [prompt, completion]}.
# Unknown models cost 0.
MODEL_PRICES = env.json(
    "MODEL_PRICES",
    default={
        "gpt-4o-mini": [150_000, 600_000],
        "gpt-4o": [2_500_000, 10_000_000],
        "gpt-4.1-mini": [400_000, 1_600_000],
        "local": [0, 0],
    },
)

# --- Limits (docs/SECURITY.md) ----------------------------------------------

# Sockets a user may hold open at once over every process; each holds a lease
# renewed every third of CHAT_SOCKET_LEASE_SECONDS, so a killed process's
# sockets stop counting within that time.
CHAT_MAX_SOCKETS_PER_USER = env.int("CHAT_MAX_SOCKETS_PER_USER", default=20)
CHAT_SOCKET_LEASE_SECONDS = env.float("CHAT_SOCKET_LEASE_SECONDS", default=60.0)
# Turns of one user running at once, in different threads.
CHAT_MAX_RUNNING_TURNS = env.int("CHAT_MAX_RUNNING_TURNS", default=3)
CHAT_MAX_THREADS_PER_USER = env.int("CHAT_MAX_THREADS_PER_USER", default=1000)
CHAT_MAX_MESSAGE_CHARS = env.int("CHAT_MAX_MESSAGE_CHARS", default=8000)
CHAT_MAX_TITLE_CHARS = env.int("CHAT_MAX_TITLE_CHARS", default=200)

# Content-Security-Policy: scripts and styles from this server only, no inline script.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# Login throttling (django-axes): after LOGIN_FAILURE_LIMIT wrong passwords for
# one user name, or from one address, that name or address is refused (429)
# for LOGIN_COOLOFF_MINUTES, even with the right password.
AUTHENTICATION_BACKENDS = ["web.login.ThrottledLoginBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.float("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_VERBOSE = False

# --- Auth, static, i18n ---------------------------------------------------

# Where ensure_demo_user keeps the demo user's random password (git-ignored).
DEMO_PASSWORD_FILE = Path(env.str("DEMO_PASSWORD_FILE", default=str(BASE_DIR / ".demo-password")))

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# Tests only: MD5 hashes (~1.6 s less per user and per login). Never in production.
if env.bool("FAST_PASSWORD_HASHING", default=False):
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Serve files straight from the finders in development, no collectstatic needed.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# With the finders, a missing STATIC_ROOT (no collectstatic run) is expected, not a problem.
warnings.filterwarnings("ignore", message="No directory at")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"httpx": {"level": "WARNING"}, "httpx2": {"level": "WARNING"}, "axes": {"level": "WARNING"}},
}

CSRF_FAILURE_VIEW = "web.views.csrf_failure"
