#!/bin/sh
# Brings up a single-host nubo cloud on embedded defaults: nubod (SQLite,
# local image library) and one nubo-agent on this host, both daemonised,
# plus the tiny image in the library. `scripts/up.sh stop` takes it all down.
#   NUBO_STATE_DIR   where everything lives (default /var/lib/nubo)
#   NUBO_PORT        the API port (default 8787)
#   NUBO_AGENT_PORT  the agent's own port, for consoles (default NUBO_PORT + 1)
#   NUBO_S3_PORT     the S3 API's port (default 8789)
#   NUBO_CIDR        the VMs' network (default 10.213.0.0/24)
#   NUBO_BRIDGE      the host bridge of that network (default nbbr0)
#   NUBO_CONFIG      the CLI config file written (default ~/.config/nubo/config)
#   NUBO_BUILD       the build whose binaries run (default build)
# `stop` needs the same NUBO_STATE_DIR, NUBO_CIDR and NUBO_BRIDGE.
set -eu
cd "$(dirname "$0")/.."
SRC=$PWD
B=${NUBO_BUILD:-$SRC/build}
STATE=${NUBO_STATE_DIR:-/var/lib/nubo}
PORT=${NUBO_PORT:-8787}
APORT=${NUBO_AGENT_PORT:-$((PORT + 1))}
S3PORT=${NUBO_S3_PORT:-8789}
CIDR=${NUBO_CIDR:-10.213.0.0/24}
BRIDGE=${NUBO_BRIDGE:-nbbr0}
CONF=${NUBO_CONFIG:-$HOME/.config/nubo/config}
RUN=$STATE/run
LOG=$STATE/log

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop() {
	for d in nubo-agent nubod; do
		if alive "$RUN/$d.pid"; then
			kill "$(cat "$RUN/$d.pid")"
			i=0; while alive "$RUN/$d.pid" && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; done
		fi
		rm -f "$RUN/$d.pid"
	done
	# the guests and everything the agent made on this host (taps, cgroups,
	# nft tables, dnsmasq, the bridge); disks and images stay
	"$B/src/nubo-agent" --teardown -s "state_dir=$STATE/agent" -s "cidr=$CIDR" \
		-s "bridge=$BRIDGE" -s "join_token=unused" >>"$LOG/agent.log" 2>&1 || true
	echo "nubo: stopped (state kept in $STATE)"
}

if [ "${1:-}" = "stop" ]; then stop; exit 0; fi

mkdir -p "$RUN" "$LOG"
chmod 700 "$STATE"
if ! alive "$RUN/nubod.pid"; then
	nohup "$B/src/nubod" -s "state_dir=$STATE" -s "api_listen=127.0.0.1:$PORT" \
		-s "s3_listen=127.0.0.1:$S3PORT" >>"$LOG/nubod.log" 2>&1 &
	echo $! >"$RUN/nubod.pid"
fi
i=0
until curl -sf "http://127.0.0.1:$PORT/v1/health" >/dev/null 2>&1; do
	i=$((i+1)); [ $i -gt 100 ] && { echo "nubod did not come up; see $LOG/nubod.log" >&2; exit 1; }
	alive "$RUN/nubod.pid" || { tail -5 "$LOG/nubod.log" >&2; exit 1; }
	sleep 0.1
done
if ! alive "$RUN/nubo-agent.pid"; then
	nohup "$B/src/nubo-agent" -s "controller=http://127.0.0.1:$PORT" \
		-s "join_token_file=$STATE/join.token" -s "listen=127.0.0.1:$APORT" \
		-s "state_dir=$STATE/agent" -s "cidr=$CIDR" -s "bridge=$BRIDGE" \
		-s "shim=$B/src/shim/nubo-shim" \
		>>"$LOG/agent.log" 2>&1 &
	echo $! >"$RUN/nubo-agent.pid"
fi
TOKEN=$(cat "$STATE/admin.token")
mkdir -p "$(dirname "$CONF")"
umask 077
printf 'endpoint = http://127.0.0.1:%s\ntoken = %s\n' "$PORT" "$TOKEN" >"$CONF"
export NUBO_CONFIG="$CONF"
NUBO="$B/src/cli/nubo"
i=0
until "$NUBO" host ls 2>/dev/null | grep -q ' up '; do
	i=$((i+1)); [ $i -gt 600 ] && { echo "the agent did not join; see $LOG/agent.log" >&2; exit 1; }
	alive "$RUN/nubo-agent.pid" || { tail -5 "$LOG/agent.log" >&2; exit 1; }
	sleep 0.1
done
if ! "$NUBO" image show tiny >/dev/null 2>&1; then
	"$NUBO" image build tiny
fi
cat <<MSG

nubo is up: API http://127.0.0.1:$PORT, S3 http://127.0.0.1:$S3PORT, state in $STATE,
logs in $LOG. The CLI is $NUBO (configured in $CONF). Try:

  $NUBO run tiny --type t1.nano --count 3 --wait
  $NUBO ls
  $NUBO logs <id>          # console output so far
  $NUBO console <id>       # live serial console, Ctrl-] detaches
  $NUBO stop|start|pause|resume|reboot|rm <id>
  $NUBO image ls; $NUBO type ls; $NUBO host ls

Stop everything with: make down
MSG
