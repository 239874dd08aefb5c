# The egressproxy image: `egressproxy run` as the non-root uid 15999, the uid the transparent sidecar's iptables
# rules exempt (`egressproxy iptables --proxy-uid 15999`, docs/transparent-mode.md). Configuration and Secrets
# come from mounted folders; the image holds neither. docs/deployment.md shows `docker run` and Kubernetes.
#
#   docker build -t egressproxy .
#   docker run --rm -p 8080:8080 -v "$PWD/config/quickstart:/etc/egressproxy/config:ro" egressproxy

FROM python:3.12-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY egressproxy ./egressproxy
COPY addons ./addons
RUN python -m venv /opt/egressproxy \
    && /opt/egressproxy/bin/pip install --no-cache-dir .

FROM python:3.12-slim-bookworm
# iptables: the sidecar's init container runs `egressproxy iptables --apply` from this same image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables=1.8.9-2 \
    && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 15999 egressproxy \
    && useradd --uid 15999 --gid 15999 --home-dir /var/lib/egressproxy --no-create-home \
       --shell /usr/sbin/nologin egressproxy \
    && install -d -o 15999 -g 15999 -m 0700 /var/lib/egressproxy \
    && install -d -m 0755 /etc/egressproxy/config /etc/egressproxy/secrets
COPY --from=build /opt/egressproxy /opt/egressproxy
ENV PATH=/opt/egressproxy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 15999:15999
WORKDIR /var/lib/egressproxy
# 8080 explicit proxy, 15001 transparent (sidecar), 19000 admin (loopback unless --admin-addr says otherwise),
# 8082 readiness (GET /ready), 9091 Prometheus (GET /metrics). DESIGN.md section 3.
EXPOSE 8080 15001 19000 8082 9091
# No curl in a slim image: the image's own Python asks /ready (an HTTP error status raises, so exit 1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8082/ready', timeout=2)"]
ENTRYPOINT ["egressproxy"]
CMD ["run", "-c", "/etc/egressproxy/config", "--secrets-dir", "/etc/egressproxy/secrets", "--data-dir", "/var/lib/egressproxy", "--mode", "regular@0.0.0.0:8080", "--ready-addr", "0.0.0.0:8082", "--metrics-addr", "0.0.0.0:9091", "--admin-addr", "127.0.0.1:19000"]
