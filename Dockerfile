# Multi-stage build: wheels are built in the first stage; the runtime image has no compiler,
# runs as a non-root user, and starts uvicorn with the fallbacks' worker beside it (scripts/serve.py),
# or the command given to docker run.
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.txt .
RUN python -m venv /venv && /venv/bin/pip install -r requirements.txt

FROM python:3.11-slim AS runtime
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=notifications_site.settings \
    DJANGO_DEBUG=0
RUN groupadd --system inbox && useradd --system --gid inbox --home-dir /app --shell /usr/sbin/nologin inbox
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=inbox:inbox manage.py ./
COPY --chown=inbox:inbox notifications_site ./notifications_site
COPY --chown=inbox:inbox inbox ./inbox
COPY --chown=inbox:inbox realtime ./realtime
COPY --chown=inbox:inbox server ./server
COPY --chown=inbox:inbox scripts/serve.py ./scripts/serve.py
# collectstatic needs a key to import settings; the real one comes from the environment at run time.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput --verbosity 0 \
    && chown -R inbox:inbox /app/staticfiles
USER inbox
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"
# No demo accounts here: DJANGO_DEBUG=0 and no INBOX_DEMO, so `manage.py inbox_demo` refuses. The
# first operator and the first service key come from the bootstrap commands (README, Deployment):
#   docker run -it ... python manage.py createsuperuser
#   docker run ... python manage.py inbox_apikey create <name> --scopes send     # the key: last line, once
# One container is the whole deployment: uvicorn serves everything, one process per CPU on port 8000
# when REDIS_URL is set (INBOX_SERVER_PROCESSES; each its own SO_REUSEPORT socket), and scripts/serve.py
# runs the fallbacks' worker (manage.py inbox_worker: Web Push, e-mail) beside them; SIGTERM (docker
# stop) stops them all (each socket gets 1012), a worker that exits is started again, a server exiting
# ends the container (docs/deployment.md). uvicorn's options are serve.py's DEFAULT_SERVER: its sans-I/O
# WebSockets (server/patches/uvicorn.py bounds what one client may make it hold), uvloop, httptools,
# and no --proxy-headers: uvicorn would take the client address from X-Forwarded-For, which the client
# writes. The application reads the proxy headers itself, trusting only what INBOX_NUM_PROXIES proxies
# appended (the client address of the rate limits) and, behind one, the proxy's X-Forwarded-Proto
# (DJANGO_SECURE_PROXY_SSL_HEADER): README, Deployment.
# INBOX_WORKER=0 runs the servers alone, for workers in containers of their own:
#   docker run ... python manage.py inbox_worker
# Other commands replace it: migrations as a separate step (docker run ... python manage.py migrate),
# or daphne, still supported, under the same supervisor:
#   docker run ... python scripts/serve.py daphne -b 0.0.0.0 -p 8000 --websocket_connect_timeout 30 \
#       notifications_site.asgi:application
CMD ["python", "scripts/serve.py", "--host", "0.0.0.0", "--port", "8000"]
