# shellcheck shell=bash
# Shared by loadtest/rest-cpu and loadtest/rest-syscalls: the REST proxies they compare, each with
# one worker thread in front of the emulator's REST port $EMU: qpoold (REST-only, server.workers
# 1), nginx (proxy_pass to an upstream keepalive pool) and HAProxy (mode http, http-reuse always;
# haproxy-bounded: with qpoold's bound on connections to the node, server maxconn).
# Usage: source after loadtest/lib.sh, with WORK, EMU, BIN (and BASE_BIN for qpoold-base) set;
# REST_MAX_CONNECTIONS, when set, is qpoold's rest.max_connections (else its default, 16).

# Writes the proxy's config for `port` and prints its command line (one word per line).
proxy_command() {  # name port
  local name=$1 port=$2
  case $name in
    qpoold|qpoold-base)
      cat >"$WORK/$name.yaml" <<EOF
server:
  workers: 1
upstream:
  rest_nodes: ["$EMU"]
rest:
  listen: "127.0.0.1:$port"${REST_MAX_CONNECTIONS:+
  max_connections: $REST_MAX_CONNECTIONS}
admin:
  listen: "127.0.0.1:0"
log:
  level: warn
EOF
      local bin=$BIN
      [[ $name == qpoold-base ]] && bin=$BASE_BIN
      printf '%s\n' "$bin/qpoold" --config "$WORK/$name.yaml"
      ;;
    nginx)
      mkdir -p "$WORK/nginx-$port"
      cat >"$WORK/nginx-$port/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $WORK/nginx-$port/nginx.pid;
error_log $WORK/nginx-$port/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx-$port/body;
  proxy_temp_path $WORK/nginx-$port/proxy;
  keepalive_requests 1000000000;
  keepalive_timeout 300s;
  upstream emu {
    server $EMU;
    keepalive 1024;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://emu;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
      printf '%s\n' nginx -p "$WORK/nginx-$port" -c "$WORK/nginx-$port/nginx.conf"
      ;;
    haproxy|haproxy-bounded)
      # haproxy-bounded: at most REST_MAX_CONNECTIONS (default 16, qpoold's) connections to the
      # node, the requests above it queued in HAProxy, as qpoold's pool queues them.
      local maxconn=""
      [[ $name == haproxy-bounded ]] && maxconn=" maxconn ${REST_MAX_CONNECTIONS:-16}"
      cat >"$WORK/haproxy-$port.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  http-reuse always
frontend fe
  bind 127.0.0.1:$port
  default_backend be
backend be
  server emu $EMU$maxconn
EOF
      printf '%s\n' haproxy -db -f "$WORK/haproxy-$port.cfg"
      ;;
    *) echo "unknown proxy $name" >&2; return 1 ;;
  esac
}
