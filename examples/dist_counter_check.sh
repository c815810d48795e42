#!/bin/sh
# Runs four dist_counter processes at once against a redis-server of its own
# and checks that the counter ends at exactly 4 x N:
#     examples/dist_counter_check.sh PATH/TO/dist_counter [N]     (N: 200)
# The server gets a free port on 127.0.0.1, a temporary directory, no
# persistence, and is stopped at the end (also on failure). Exits 77 (a
# skip, to CTest) when redis-server or redis-cli is not installed.
set -u

bin=$1
n=${2:-200}
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "   skipped: redis-server is not installed (Debian: apt-get install redis-server)"
    exit 77
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/twine-dist-counter.XXXXXX")
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# redis has no --port 0: take a port the kernel says is free, and try
# another if the server loses it to someone else before it binds.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
        echo $((20000 + $(od -An -N2 -tu2 /dev/urandom) % 30000))
}

port=""
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    try=$(free_port)
    : >"$dir/server.log"
    redis-server --port "$try" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
        --daemonize no --logfile "$dir/server.log" &
    pid=$!
    waited=0
    while [ "$waited" -lt 200 ]; do # 10 s
        if [ "$(redis-cli -p "$try" PING 2>/dev/null)" = PONG ]; then
            port=$try
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
        waited=$((waited + 1))
    done
    [ -n "$port" ] && break
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=""
    grep -q "Address already in use" "$dir/server.log" || break
done
if [ -z "$port" ]; then
    echo "   redis-server did not start: $(tail -n 1 "$dir/server.log")"
    exit 1
fi

pids=""
for i in 1 2 3 4; do
    "$bin" --redis "127.0.0.1:$port" --name demo:counter --count "$n" >"$dir/out$i" 2>&1 &
    pids="$pids $!"
done
status=0
for p in $pids; do
    wait "$p" || status=1
done
for i in 1 2 3 4; do
    last=$(tail -n 1 "$dir/out$i")
    if [ "$last" != "done $n" ]; then
        echo "   process $i ended with: $last"
        sed 's/^/   | /' "$dir/out$i" | head -n 5
        status=1
    fi
done
got=$(redis-cli -p "$port" GET demo:counter)
want=$((4 * n))
echo "   4 processes x $n increments (GET, then a fenced SET) under one Redis lock: counter = $got (expected $want)"
[ "$got" = "$want" ] || status=1
exit $status
