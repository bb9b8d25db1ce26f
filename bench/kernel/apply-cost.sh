#!/bin/bash
# Times one lock configuration inside a sandbox root (network namespace + overlay
# root, set up by bench/kernel.ts) and prints "RESULT key=value ..." lines.
#
# Usage: apply-cost.sh CASE ROUNDS
#   CASE    name of /bench/CASE.conf, a saved-lock file (address and user lines)
#   ROUNDS  number of timed rounds. Each round times every command once,
#           back to back, so machine noise hits all of them alike.
#
# Every timed command starts from the state the program leaves behind (the lock
# already applied), which is the state a scheduled reapply meets:
#   apply   ip-lockdown --apply
#   config  ip-lockdown --config CASE.conf --name bench (validate, save, apply)
#   status  ip-lockdown --status
#   floor   one bare iptables-restore --noflush per family (or one nft -f) that
#           loads exactly the rules the program installed, read back from the kernel
#   floor3  the floor between two reads of the live rules (what a run needs to
#           build its transaction and check the result)
#   naive   the same rules with one iptables (or nft) call per rule
# bash, not sh: $EPOCHREALTIME reads the clock without spawning a process.
set -u
case_name=$1
rounds=$2
conf=/bench/$case_name.conf
work=/tmp/bench-$case_name
rm -rf "$work"
mkdir -p "$work"
errlog=$work/errors.log
: >"$errlog"

fail() {
  echo "ERROR case=$case_name $*"
  sed 's/^/ERROR-DETAIL /' "$errlog" | tail -n 20
  exit 1
}

program() {
  ip-lockdown "$@" >>"$errlog" 2>&1 </dev/null
}

program --config "$conf" --name bench || fail "initial apply failed with status $?"

if command -v iptables >/dev/null 2>&1; then
  backend=iptables
else
  backend=nft
fi

# Prints our rules per family, without counters, in a form two states can be compared by.
snapshot() {
  if [ "$backend" = iptables ]; then
    for family in iptables ip6tables; do
      echo "## $family"
      "$family-save" -t filter 2>/dev/null | grep -E 'IPLOCKDOWN' | sed 's/ \[[0-9]*:[0-9]*\]$//'
    done
  else
    nft -s list table inet ip_lockdown 2>/dev/null
  fi
}

# Writes the floor (one transaction per family) and the naive script (one call
# per rule) from the rules the program installed.
build_reference() {
  local family restore lines
  : >"$work/naive.sh"
  if [ "$backend" = iptables ]; then
    for family in iptables ip6tables; do
      lines=$("$family-save" -t filter 2>/dev/null | grep -E 'IPLOCKDOWN')
      [ -n "$lines" ] || continue
      restore=$work/floor.$family
      {
        echo '*filter'
        # Our own chains are declared, which in --noflush mode flushes them.
        printf '%s\n' "$lines" | grep -E '^:IPLOCKDOWN' | sed 's/ \[[0-9]*:[0-9]*\]$/ [0:0]/'
        # Jumps from chains that are not ours are deleted and put back first.
        printf '%s\n' "$lines" | grep -E '^-A ' | grep -vE '^-A IPLOCKDOWN' |
          sed -E 's/^-A ([^ ]+) (.*)$/-D \1 \2\n-I \1 1 \2/'
        printf '%s\n' "$lines" | grep -E '^-A IPLOCKDOWN'
        echo 'COMMIT'
      } >"$restore"
      {
        printf '%s\n' "$lines" | grep -E '^:IPLOCKDOWN' | sed -E "s/^:([^ ]+) .*/$family -w -F \1/"
        printf '%s\n' "$lines" | grep -E '^-A ' | grep -vE '^-A IPLOCKDOWN' |
          sed -E "s/^-A ([^ ]+) (.*)$/$family -w -D \1 \2\n$family -w -I \1 1 \2/"
        printf '%s\n' "$lines" | grep -E '^-A IPLOCKDOWN' | sed "s/^/$family -w /"
      } >>"$work/naive.sh"
    done
  else
    {
      echo 'table inet ip_lockdown'
      echo 'delete table inet ip_lockdown'
      nft -s list table inet ip_lockdown
    } >"$work/floor.nft"
    echo 'nft flush table inet ip_lockdown' >>"$work/naive.sh"
    # One "nft add ..." per rule, per set element list and per chain header.
    nft -s list table inet ip_lockdown | awk -v q="'" '
      function quote(s) { gsub(q, q "\\" q q, s); return q s q }
      /^[ \t]*$/ { next }
      /^table / { next }
      /^[ \t]*chain [^ ]+ \{/ { chain = $2; next }
      /^[ \t]*set [^ ]+ \{/ { set = $2; next }
      /^[ \t]*(type|hook|policy|flags|typeof|comment) / { next }
      /^[ \t]*elements = / {
        line = $0; sub(/^[ \t]*elements = /, "", line)
        while (line !~ /\}/ && (getline more) > 0) { line = line " " more }
        print "nft " quote("add element inet ip_lockdown " set " " line); next
      }
      /^[ \t]*\}/ { if (set != "") set = ""; else chain = ""; next }
      chain != "" { line = $0; sub(/^[ \t]+/, "", line); print "nft " quote("add rule inet ip_lockdown " chain " " line) }
    ' >>"$work/naive.sh"
  fi
}

floor() {
  local file
  if [ "$backend" = iptables ]; then
    for file in "$work"/floor.*; do
      case $file in
        *.iptables) iptables-restore -w 10 --noflush <"$file" || return 1 ;;
        *.ip6tables) ip6tables-restore -w 10 --noflush <"$file" || return 1 ;;
      esac
    done
  else
    nft -f "$work/floor.nft"
  fi
}

# The floor plus the reads the contract requires of a run: read the live rules
# before building the transaction and read them back after it.
floor_read_back() {
  if [ "$backend" = iptables ]; then
    iptables-save -t filter >/dev/null && floor && iptables-save -t filter >/dev/null
  else
    nft list table inet ip_lockdown >/dev/null && floor && nft list table inet ip_lockdown >/dev/null
  fi
}

naive() {
  sh -e "$work/naive.sh"
}

build_reference
snapshot >"$work/state-program"
naive_calls=$(grep -c . "$work/naive.sh")
# Rules only: iptables "-A" lines, or nft lines that are not a table, chain, set, hook or brace.
rules=$(grep -E '^-A |^[[:space:]]+[a-z@]' "$work/state-program" |
  grep -cvE '^[[:space:]]*(table|chain|set|type|hook|policy|flags|elements|typeof) ')

# Both references must reproduce the program's rules exactly, or the ratio is meaningless.
floor >>"$errlog" 2>&1 || fail "floor transaction failed"
snapshot >"$work/state-floor"
program --apply || fail "reapply after the floor failed"
naive >>"$errlog" 2>&1 || fail "naive script failed"
snapshot >"$work/state-naive"
program --apply || fail "reapply after the naive script failed"
floor_same=no
naive_same=no
cmp -s "$work/state-program" "$work/state-floor" && floor_same=yes
cmp -s "$work/state-program" "$work/state-naive" && naive_same=yes
if [ "$floor_same" = no ] || [ "$naive_same" = no ]; then
  diff "$work/state-program" "$work/state-floor" | sed 's/^/FLOOR-DIFF /' | head -n 20
  diff "$work/state-program" "$work/state-naive" | sed 's/^/NAIVE-DIFF /' | head -n 20
fi
echo "INFO case=$case_name backend=$backend rules=$rules naive_calls=$naive_calls floor_files=$(cd "$work" && echo floor.* | tr ' ' ',') floor_same=$floor_same naive_same=$naive_same"

# Counts the processes one reapply starts (untimed; strace slows every step down).
if command -v strace >/dev/null 2>&1; then
  strace -f -qq -e trace=execve,fork,vfork,clone,clone3 -o "$work/trace" ip-lockdown --apply >>"$errlog" 2>&1 </dev/null
  forks=$(grep -cE ' (fork|vfork|clone|clone3)\(' "$work/trace")
  execs=$(grep -E ' execve\(' "$work/trace" | grep -vc ' = -1 ')
  top=$(grep -E ' execve\(' "$work/trace" | grep -v ' = -1 ' | sed -E 's/.*execve\("([^"]*)".*/\1/; s|.*/||' |
    sort | uniq -c | sort -rn | head -n 8 | awk '{printf "%s%s:%s", (NR > 1 ? "," : ""), $2, $1}')
  echo "INFO case=$case_name forks=$forks execs=$execs top_execs=$top"
fi

declare -a t_apply t_config t_status t_floor t_floor3 t_naive
status_rc=-1
elapsed=0
# Sets $elapsed (microseconds) and returns the command's status.
timed() {
  local start end rc
  start=${EPOCHREALTIME/./}
  "$@" >>"$errlog" 2>&1 </dev/null
  rc=$?
  end=${EPOCHREALTIME/./}
  elapsed=$((end - start))
  return $rc
}

deadline=$((SECONDS + 240))
done_rounds=0
for ((round = 1; round <= rounds; round++)); do
  [ $SECONDS -lt $deadline ] || break
  timed ip-lockdown --apply || fail "ip-lockdown --apply failed in round $round"
  t_apply+=("$elapsed")
  timed ip-lockdown --config "$conf" --name bench || fail "ip-lockdown --config failed in round $round"
  t_config+=("$elapsed")
  timed ip-lockdown --status
  status_rc=$?
  t_status+=("$elapsed")
  timed floor || fail "floor failed in round $round"
  t_floor+=("$elapsed")
  program --apply || fail "reapply after the floor failed in round $round"
  timed floor_read_back || fail "floor with read-back failed in round $round"
  t_floor3+=("$elapsed")
  program --apply || fail "reapply after the floor failed in round $round"
  timed naive || fail "naive script failed in round $round"
  t_naive+=("$elapsed")
  program --apply || fail "reapply after the naive script failed in round $round"
  done_rounds=$round
done

median() {
  printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"
}

for kind in apply config status floor floor3 naive; do
  declare -n samples="t_$kind"
  sorted=$(printf '%s\n' "${samples[@]}" | sort -n)
  samples_text=$(IFS=,; echo "${samples[*]}")
  echo "RESULT case=$case_name kind=$kind rounds=$done_rounds median_us=$(median "${samples[@]}") min_us=$(head -n 1 <<<"$sorted") max_us=$(tail -n 1 <<<"$sorted") samples_us=$samples_text"
  unset -n samples
done
echo "INFO case=$case_name status_exit=$status_rc"
