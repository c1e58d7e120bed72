# What the gateway bench scripts share; sourced by run.sh, propagation.sh
# and roll.sh.

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
