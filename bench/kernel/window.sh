#!/bin/bash
# Looks for an open window inside a sandbox root (set up by bench/kernel.ts):
# a blocked user connects to the locked address in a tight loop while the lock
# is reapplied, then while another tool puts an ACCEPT rule above it.
# Prints "RESULT key=value ..." lines.
#
# Usage: window.sh REAPPLIES FOREIGN_SECONDS RACE_TRIALS
#   REAPPLIES        reapplies, alternating /bench/allow-a.conf and allow-b.conf
#                    (both leave out the user "bvictim")
#   FOREIGN_SECONDS  time between the foreign ACCEPT and the next reapply, a
#                    stand-in for the reapply schedule
#   RACE_TRIALS      times the foreign ACCEPT and a reapply start together
# Expects an HTTP server on 127.77.0.1:8080 in the namespace.
set -u
reapplies=$1
foreign_seconds=$2
race_trials=$3
target=127.77.0.1
port=8080
source_address=127.0.0.1
work=/tmp/bench-window
rm -rf "$work"
mkdir -p "$work"
chmod 0777 "$work"
errlog=$work/errors.log
: >"$errlog"

fail() {
  echo "ERROR $*"
  sed 's/^/ERROR-DETAIL /' "$errlog" | tail -n 20
  exit 1
}

now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

if command -v iptables >/dev/null 2>&1; then
  backend=iptables
else
  backend=nft
fi

# Starts the connect loop as USER in the background; its summary goes to OUT.
start_client() {
  local user=$1 out=$2 max_seconds=$3
  rm -f "$work/stop" "$out"
  setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups -- \
    node /bench/connect-loop.js "$target" "$port" "$source_address" "$work/stop" "$out" \
    "$max_seconds" 50000000 2 2>>"$errlog" &
  client_pid=$!
}

stop_client() {
  touch "$work/stop"
  wait "$client_pid"
}

# Prints "attempts successes first last errors" from a client summary.
read_summary() {
  node -e '
    const s = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const errors = Object.entries(s.errors).map(([k, v]) => k + ":" + v).join(",") || "none";
    console.log([s.attempts, s.successes, s.firstSuccessAt ?? 0, s.lastSuccessAt ?? 0, errors].join(" "));
  ' "$1"
}

# A short probe: prints the number of completed handshakes in SECONDS.
probe() {
  local user=$1 seconds=$2 out=$work/probe-$1.json
  start_client "$user" "$out" "$seconds"
  wait "$client_pid"
  read -r _ successes _ _ _ < <(read_summary "$out")
  echo "$successes"
}

# The apply-cost runs left their lock on the same addresses: start from none.
rm -f /etc/ip-lockdown/locks.d/*.conf
ip-lockdown --apply >>"$errlog" 2>&1 || fail "removing the earlier locks failed with status $?"

# With no lock the victim must get through, or a zero below would prove nothing.
open_successes=$(probe bvictim 0.5)
[ "$open_successes" -gt 0 ] || fail "the client cannot reach $target:$port even without a lock"
ip-lockdown --config /bench/allow-a.conf --name bench >>"$errlog" 2>&1 || fail "first apply failed"
allowed_successes=$(probe bu01 0.5)
blocked_successes=$(probe bvictim 0.5)
[ "$allowed_successes" -gt 0 ] || fail "an allowed user cannot reach $target:$port under the lock"
[ "$blocked_successes" -eq 0 ] || fail "the victim got through a freshly applied lock $blocked_successes times"
echo "INFO backend=$backend sanity_open=$open_successes sanity_allowed=$allowed_successes sanity_blocked=$blocked_successes"

# Part 1: reapply in a loop, alternating the allow lists.
start_client bvictim "$work/reapply.json" $((${BENCH_REAPPLY_SECONDS:-900} + 60))
sleep 0.3
failures=0
done_count=0
loop_start=$(now_ms)
deadline=$((SECONDS + ${BENCH_REAPPLY_SECONDS:-900}))
for ((i = 1; i <= reapplies; i++)); do
  [ $SECONDS -lt $deadline ] || break
  if ((i % 2)); then conf=/bench/allow-b.conf; else conf=/bench/allow-a.conf; fi
  ip-lockdown --config "$conf" --name bench >>"$errlog" 2>&1 || failures=$((failures + 1))
  done_count=$i
done
loop_ms=$(($(now_ms) - loop_start))
stop_client
read -r attempts successes _ _ errors < <(read_summary "$work/reapply.json")
echo "RESULT part=reapply backend=$backend reapplies=$done_count failed_reapplies=$failures loop_ms=$loop_ms attempts=$attempts successes=$successes errors=$errors"

# Part 2: another tool inserts an ACCEPT above everything; the next reapply
# (here after FOREIGN_SECONDS) has to put the lock back in front.
insert_foreign() {
  if [ "$backend" = iptables ]; then
    iptables -w -I OUTPUT 1 -j ACCEPT
  else
    nft add table ip othertool &&
      nft 'add chain ip othertool output { type filter hook output priority 0; policy accept; }' &&
      nft insert rule ip othertool output accept
  fi
}
remove_foreign() {
  if [ "$backend" = iptables ]; then
    while iptables -w -D OUTPUT -j ACCEPT 2>/dev/null; do :; done
  else
    nft delete table ip othertool 2>/dev/null
  fi
  return 0
}
start_client bvictim "$work/foreign.json" 60
sleep 0.5
insert_at=$(now_ms)
insert_foreign >>"$errlog" 2>&1 || fail "the foreign insert failed"
# --status must see the foreign rule as drift (exit 1) while the window is open.
ip-lockdown --status >>"$errlog" 2>&1
status_during=$?
remaining_ms=$((foreign_seconds * 1000 - ($(now_ms) - insert_at)))
if [ "$remaining_ms" -gt 0 ]; then
  sleep "$((remaining_ms / 1000)).$(printf %03d $((remaining_ms % 1000)))"
fi
reapply_at=$(now_ms)
ip-lockdown --apply >>"$errlog" 2>&1
reapply_status=$?
reapplied_at=$(now_ms)
sleep 1
stop_client
read -r attempts successes first last errors < <(read_summary "$work/foreign.json")
after_reapply=0
if [ "$successes" -gt 0 ]; then
  window_ms=$((last - insert_at))
  [ "$last" -le "$reapplied_at" ] || after_reapply=1
  first_ms=$((first - insert_at))
else
  window_ms=0
  first_ms=-1
fi
if [ "$backend" = iptables ]; then
  first_rule=$(iptables -S OUTPUT | sed -n 2p)
else
  first_rule=n/a
fi
echo "RESULT part=foreign backend=$backend wait_s=$foreign_seconds status_during=$status_during reapply_after_ms=$((reapply_at - insert_at)) reapply_status=$reapply_status reapply_ms=$((reapplied_at - reapply_at)) attempts=$attempts successes=$successes first_success_ms=$first_ms window_ms=$window_ms success_after_reapply=$after_reapply output_first_rule=\"$first_rule\" errors=$errors"
remove_foreign

# Part 3: the foreign insert lands while a reapply runs, at offsets spread
# evenly over one reapply's duration. The reapply fixes an insert that lands
# before it reads its rules back; a later one stays above the lock until the
# next scheduled reapply. Inserts that finish after the reapply has ended do
# not count as landing during it.
during=0
open_after=0
trials_done=0
spread_ms=0
if [ "$backend" = iptables ]; then
  for _ in 1 2 3; do
    started=$(now_ms)
    ip-lockdown --apply >>"$errlog" 2>&1 || fail "reapply before the race trials failed"
    took=$(($(now_ms) - started))
    [ "$took" -le "$spread_ms" ] || spread_ms=$took
  done
  race_deadline=$((SECONDS + 180))
  for ((i = 1; i <= race_trials; i++)); do
    [ $SECONDS -lt $race_deadline ] || break
    offset_ms=$(((i - 1) * spread_ms / race_trials))
    rm -f "$work/applied" "$work/inserted"
    started=$(now_ms)
    { ip-lockdown --apply; now_ms >"$work/applied"; } >>"$errlog" 2>&1 &
    apply_pid=$!
    { sleep "$((offset_ms / 1000)).$(printf %03d $((offset_ms % 1000)))" && insert_foreign && now_ms >"$work/inserted"; } >>"$errlog" 2>&1 &
    insert_pid=$!
    wait "$apply_pid" "$insert_pid"
    if [ ! -s "$work/inserted" ] || [ ! -s "$work/applied" ]; then
      fail "race trial $i: the reapply or the insert failed"
    fi
    if [ "$(cat "$work/inserted")" -le "$(cat "$work/applied")" ]; then
      during=$((during + 1))
      if [ "$(iptables -S OUTPUT | sed -n 2p)" = "-A OUTPUT -j ACCEPT" ]; then
        open_after=$((open_after + 1))
      fi
    fi
    remove_foreign
    ip-lockdown --apply >>"$errlog" 2>&1 || fail "reapply after race trial $i failed"
    trials_done=$i
  done
fi
echo "RESULT part=race backend=$backend trials=$trials_done during=$during left_open=$open_after spread_ms=$spread_ms"
