# What the gateway bench scripts share; sourced by run.sh, profile.sh,
# propagation.sh and roll.sh.

# A free loopback port.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (10 s at most) until URL answers 2xx; exits the script otherwise.
wait_http() { # url
  for _ in $(seq 1 200); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  exit 1
}

# A throwaway single-member etcd on free loopback ports (no fsync, short
# election), started in the background and waited for. Sets etcd_port
# (its client port) and etcd_pid. Call it directly, not in $(…).
start_etcd() { # name data-dir log-file
  local peer_port
  etcd_port=$(free_port)
  peer_port=$(free_port)
  etcd --name "$1" --data-dir "$2" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "$1=http://127.0.0.1:$peer_port" --heartbeat-interval 10 --election-timeout 100 \
    --unsafe-no-fsync --log-level error --logger zap 2>"$3" &
  etcd_pid=$!
  wait_http "http://127.0.0.1:$etcd_port/health"
}

# What run.sh and profile.sh start with: a work folder, removed at exit
# after every process in pids is stopped; a throwaway etcd; one registered
# instance of the notes example ($web). Sets work, pids, cp (etcd's client
# port), wp and web_pid. Call it directly, not in $(…).
start_etcd_and_notes() { # etcd-name instance-id
  work=$(mktemp -d)
  pids=()
  trap stop_started EXIT
  start_etcd "$1" "$work/etcd" "$work/etcd.log"
  pids+=($etcd_pid)
  cp=$etcd_port
  export ETCDCTL_API=3
  start_registered_web "$2" "$work/web.log"
}

# Stops every process in pids and removes $work.
stop_started() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}

# Starts one instance of the notes example (binary `$web`) on a free port
# and registers it by hand in the etcd on 127.0.0.1:$etcd_port under a
# kept-alive lease, as instance `id`. Sets wp (its port) and web_pid; adds
# both processes to pids.
start_registered_web() { # id log-file
  local id=$1 log=$2 lease record
  wp=$(free_port)
  RUST_LOG=warn WEB_SERVER_ADDRESS="127.0.0.1:$wp" "$web" >"$log" 2>&1 &
  web_pid=$!
  pids+=($web_pid)
  wait_http "http://127.0.0.1:$wp/notes/1"
  lease=$(ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_port" lease grant 600 | awk '{print $2}')
  # etcdctl itself in the background: $! must be its pid, not a subshell's.
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_port" lease keep-alive "$lease" >/dev/null 2>&1 &
  pids+=($!)
  record=$(printf '{"service":"notes","instance_id":"%s","version":"0.0.0","host":"%s","pid":%d,"http":"127.0.0.1:%d","routes":[{"method":"GET","path":"/notes/{id}"},{"method":"POST","path":"/notes"}],"websocket":true,"sticky":false,"started_at_ms":0}' \
    "$id" "$(hostname)" "$web_pid" "$wp")
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$etcd_port" put --lease="$lease" "/shimeji/v1/instances/notes/$id" "$record" >/dev/null
}

# An HAProxy configuration with the notes instance on 127.0.0.1:$wp as its
# one server, listening on 127.0.0.1:PORT with THREADS threads. With
# HEADERS=1 it does the header work the gateway does on every request:
# - X-Request-Id: the client's when it is 1 to 128 visible ASCII
#   characters, else a new one (the gateway: 32 random hex digits;
#   HAProxy: a random UUID, its cheapest random id); sent upstream and
#   returned to the client.
# - traceparent: the client's when it is a W3C trace context, else a new
#   random root (and the client's tracestate dropped).
# - X-Forwarded-For appended; X-Forwarded-Proto and X-Forwarded-Host set
#   when absent. Hop-by-hop headers HAProxy drops by itself.
haproxy_config() { # port headers(0|1) threads
  cat <<EOF
global
  maxconn 4096
  nbthread $3
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
frontend f
  bind 127.0.0.1:$1
EOF
  if [[ $2 == 1 ]]; then
    cat <<'EOF'
  option forwardfor
  acl given_id req.hdr(x-request-id) -m reg ^[!-~]{1,128}$
  acl given_trace req.hdr(traceparent) -m reg ^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$
  http-request set-header X-Request-Id %[uuid] unless given_id
  http-request set-var(txn.request_id) req.hdr(x-request-id)
  http-request del-header tracestate unless given_trace
  http-request set-header traceparent 00-%[rand,bytes(4,4),hex,lower]%[rand,bytes(4,4),hex,lower]%[rand,bytes(4,4),hex,lower]%[rand,bytes(4,4),hex,lower]-%[rand,bytes(4,4),hex,lower]%[rand,bytes(4,4),hex,lower]-01 unless given_trace
  http-request set-header X-Forwarded-Proto http unless { req.hdr(x-forwarded-proto) -m found }
  http-request set-header X-Forwarded-Host %[req.hdr(host)] unless { req.hdr(x-forwarded-host) -m found }
  http-response set-header X-Request-Id %[var(txn.request_id)]
EOF
  fi
  cat <<EOF
  default_backend notes
backend notes
  balance roundrobin
  server n1 127.0.0.1:$wp
EOF
}

# Starts HAProxy with haproxy_config's configuration (written to
# $work/NAME.cfg) in the background and waits for it; sets haproxy_pid and
# adds it to pids.
start_haproxy() { # name port headers(0|1) threads
  haproxy_config "$2" "$3" "$4" >"$work/$1.cfg"
  haproxy -f "$work/$1.cfg" >"$work/$1.log" 2>&1 &
  haproxy_pid=$!
  pids+=($haproxy_pid)
  wait_http "http://127.0.0.1:$2/notes/1"
}
