#!/bin/sh
# ip-lockdown lets only the named users and groups open outgoing connections to
# locked IP addresses, such as the EC2 instance metadata service, and rejects
# everyone else. Its rules live in chains (or an nft table) of their own, which
# are replaced in one transaction per address family. Run --help for usage.
# shellcheck disable=SC3043 # local is not POSIX, but dash, bash and busybox ash support it

# -e: stop at the first unexpected failure instead of applying half a plan.
# -u: an unset variable is a bug, not an empty value.
set -eu
export LC_ALL=C

PROG=ip-lockdown
CONF_DIR=/etc/ip-lockdown/locks.d
STATE_DIR=/run/ip-lockdown
LOCK_FILE=/run/ip-lockdown.lock
UNIT=/etc/systemd/system/ip-lockdown.service
WAIT=30
LOG_RULE='-m limit --limit 6/min -j LOG --log-prefix "ip-lockdown blocked: "'
NFT_LOG='limit rate 6/minute log prefix "ip-lockdown blocked: "'
ADDR_FORM='expected an IPv4 address, an IPv4 CIDR block with zero host bits (10.0.0.0/8) or an IPv6 address'
NAME_FORM='expected a name ([a-z_][a-z0-9_.-]*, at most 32 characters) or a numeric id'
IFACE_FORM='expected an interface name or a pattern ending in + (docker0, br-+), at most 15 characters'

usage() {
	cat <<EOF
Usage: $PROG [OPTIONS] IP[,IP...] [USER...]
$PROG [OPTIONS] --config FILE [--name NAME]
$PROG --apply|--status|--unlock IP|--install-boot-service|--help

Only the allowed users and groups (owners of the sending socket) may connect
to a locked IP; others get a TCP reset or an ICMP error at once.

IP[,IP...] [USER...]  save lock cli-IP (or --name) and apply all saved locks
--config FILE  save FILE as lock NAME (default: FILE less .conf), apply all
--apply        apply all saved locks (the boot service runs this)
--status       print locks, resolved ids, backend, drift (exit 1 on drift)
--unlock IP    remove IP from all locks, delete emptied ones, apply
--install-boot-service  install and enable $UNIT
--group NAME   also allow group NAME (repeatable)
--log-blocked  log rejections (6/min, prefix "ip-lockdown blocked: ", uid)
--block-forwarded PATTERN  also reject forwarded packets to the IPs entering
on a matching interface (docker0, br-+: a trailing + is a wildcard)
--name NAME    lock name: [A-Za-z0-9][A-Za-z0-9_.-]*, up to 64 characters
--dry-run      print the iptables-restore or nft input; change nothing
--backend B    auto (iptables if it works, else nft), iptables or nft

IP: IPv4 address, IPv4 CIDR block or IPv6 address. USER, NAME: name or id.
No USER and no group: nobody may connect. A missing user or group is
skipped (exit 4) and stays locked out. An address in several locks admits
only processes that every one of them allows.
The owner match cannot see container traffic on a bridge (it is forwarded,
not sent by a local socket): without --block-forwarded, containers are not
covered. nft lacks a supplementary group match, so the nft backend expands
groups to members: apply again after changing a group.
Lock files: $CONF_DIR/NAME.conf, lines: address IP, user USER,
group NAME, log-blocked, block-forwarded PATTERN.
Exit: 0 done, 1 drift, 2 invalid input (nothing changed), 3 no usable backend
or owner match, 4 user or group not found, 5 applying failed.
EOF
}

log() { printf '%s: %s: %s\n' "$PROG" "$1" "$2" >&2; }

# Logs the summary line of a run, also to syslog where logger exists.
summary() {
	log "$1" "$2"
	if command -v logger >/dev/null 2>&1; then logger -t "$PROG" -p "user.$1" -- "$2" 2>/dev/null || :; fi
}

die() {
	summary error "$2"
	exit "$1"
}

cleanup() {
	rm -rf "$WORK"
	if [ -n "$LOCK_DIR" ]; then rmdir "$LOCK_DIR" || :; fi
}

# Prints the 32-bit value of a dotted quad (0-255, no leading zeros).
ipv4_value() {
	local rest="$1." octet value=0
	case $1 in *.*.*.*.* | *[!0-9.]*) return 1 ;; *.*.*.*) ;; *) return 1 ;; esac
	while [ -n "$rest" ]; do
		octet=${rest%%.*}
		rest=${rest#*.}
		case $octet in [0-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) ;; *) return 1 ;; esac
		value=$((value * 256 + octet))
	done
	echo "$value"
}

# Prints an IPv6 address as iptables and nft print it (RFC 5952): lowercase,
# no leading zeros, the first longest run of two or more zero groups as ::.
canon_ipv6() {
	local s="$1" w words='' run=:0:0:0:0:0:0:0:0:
	case $s in '' | *[!0-9A-Fa-f:]* | *:::* | *::*::* | :[!:]* | *[!:]:) return 1 ;; esac
	case $s in *::*)
		s=${s%%::*}:x:${s#*::}
		s=${s#:}
		s=${s%:}
		;;
	esac
	IFS=:
	# shellcheck disable=SC2086 # split on ':'; the value holds only hex digits, ':' and x
	set -- $s
	unset IFS
	[ $# -le 8 ] || return 1
	for w; do
		case $w in
		x) words="$words$(echo "$run" | cut -c$((2 * $# - 1))- | tr : ' ')" ;;
		? | ?? | ??? | ????) words="$words $((0x$w))" ;;
		*) return 1 ;;
		esac
	done
	# shellcheck disable=SC2086 # split the decimal groups
	set -- $words
	[ $# = 8 ] || return 1
	if [ "$1$2$3$4$5" = 00000 ] && { [ "$6" = 0 ] || [ "$6" = 65535 ]; } && [ "$*" != '0 0 0 0 0 0 0 1' ]; then
		echo ':: and IPv4-mapped or -compatible addresses are not supported, lock the IPv4 address'
		return 1
	fi

	s=:$(printf '%x:' "$@")
	while [ ${#run} -gt 4 ]; do
		case $s in *"$run"*)
			s=${s%%"$run"*}::${s#*"$run"}
			break
			;;
		esac
		run=${run#:0}
	done
	case $s in ::*) ;; *) s=${s#:} ;; esac
	case $s in *::) ;; *) s=${s%:} ;; esac
	echo "$s"
}

# Prints the canonical form of an address or IPv4 CIDR block (a /32 becomes a
# plain address), or prints why it is invalid and fails.
canon_ip() {
	local prefix="${1#*/}" value why=''
	case $1 in
	*:*/*) why='IPv6 CIDR blocks are not supported, list the addresses' ;;
	*:*.*) why='IPv6 with an embedded IPv4 part is not supported, write it in hex' ;;
	*:*) why=$(canon_ipv6 "$1") && echo "$why" && return ;;
	*/*)
		case $prefix in [1-9] | [12][0-9] | 3[0-2]) ;; *) prefix=0 ;; esac
		if [ "$prefix" != 0 ] && value=$(ipv4_value "${1%/*}"); then
			why='the host bits are not zero'
			if [ $((value % (1 << (32 - prefix)))) = 0 ]; then
				if [ "$prefix" = 32 ]; then echo "${1%/*}"; else echo "$1"; fi
				return
			fi
		fi
		;;
	*) ipv4_value "$1" >/dev/null && echo "$1" && return ;;
	esac
	echo "${why:-$ADDR_FORM}"
	return 1
}

# Prints the canonical address, or exits 2 naming the value and where it came from.
checked_ip() {
	local out
	out=$(canon_ip "$1") || die 2 "$2: invalid address '$1': $out"
	echo "$out"
}

# Accepts a user or group name, or a numeric id without leading zeros.
is_account() {
	case $1 in
	0 | [1-9] | [1-9]*[0-9]) case $1 in *[!0-9]*) ;; *) [ ${#1} -le 10 ] && [ "$1" -le 4294967294 ] && return ;; esac ;;
	esac
	case $1 in [a-z_]*) ;; *) return 1 ;; esac
	case ${1%\$} in *[!a-z0-9_.-]*) return 1 ;; esac
	[ ${#1} -le 32 ]
}

is_lock_name() {
	case $1 in [A-Za-z0-9]*) ;; *) return 1 ;; esac
	case $1 in *[!A-Za-z0-9_.-]*) return 1 ;; esac
	[ ${#1} -le 64 ]
}

is_iface_pattern() {
	case ${1%+} in *[!A-Za-z0-9_.-]* | [!A-Za-z0-9]*) return 1 ;; esac
	[ -n "$1" ] && [ ${#1} -le 15 ]
}

# Validates one lock file line, given as words, and prints it in normal form.
parse_line() {
	local where="$1" value
	shift
	case ${1-#} in
	'#'*) return ;;
	log-blocked) [ $# = 1 ] || die 2 "$where: log-blocked takes no value" ;;
	address | user | group | block-forwarded) [ $# = 2 ] || die 2 "$where: $1 takes one value" ;;
	*) die 2 "$where: invalid line '$*': expected address, user, group, log-blocked or block-forwarded" ;;
	esac
	case $1 in
	address)
		value=$(checked_ip "$2" "$where") || exit 2
		set -- address "$value"
		;;
	user | group) is_account "$2" || die 2 "$where: invalid $1 '$2': $NAME_FORM" ;;
	block-forwarded) is_iface_pattern "$2" || die 2 "$where: invalid interface pattern '$2': $IFACE_FORM" ;;
	esac
	echo "$*"
}

# Validates lock file $1 (called $2 in messages) and prints its directives in
# normal form.
parse_lock() {
	local line n=0
	while IFS= read -r line || [ -n "$line" ]; do
		n=$((n + 1))
		set -f
		# shellcheck disable=SC2086 # split the line into words, with globbing off
		parse_line "$2 line $n" $line
		set +f
	done <"$1"
}

# Prints the passwd or group ($1) entry of a name or numeric id ($2).
account_entry() {
	local name pw id rest
	if command -v getent >/dev/null 2>&1; then
		getent "$1" "$2"
		return
	fi
	while IFS=: read -r name pw id rest; do
		if [ "$name" = "$2" ] || [ "$id" = "$2" ]; then
			echo "$name:$pw:$id:$rest"
			return
		fi
	done <"/etc/$1"
	return 1
}

# Prints the id of a user or group. A numeric id is printed as it is.
account_id() {
	local entry
	case $2 in *[!0-9]*) ;; *)
		echo "$2"
		return
		;;
	esac
	entry=$(account_entry "$1" "$2") || return 1
	entry=${entry#*:*:}
	echo "${entry%%:*}"
}

# Prints "m UID" for each member of group $1 (gid $2): those listed in the
# group and those whose primary group it is.
group_members() {
	local entry name pw uid gid rest
	entry=$(account_entry group "$1") || entry=
	set -f
	for name in $(echo "${entry#*:*:*:}" | tr , ' '); do
		if uid=$(account_id passwd "$name"); then echo "m $uid"; fi
	done
	set +f
	if command -v getent >/dev/null 2>&1; then getent passwd; else cat /etc/passwd; fi |
		while IFS=: read -r name pw uid gid rest; do
			if [ "$gid" = "$2" ]; then echo "m $uid"; fi
		done
}

# Prints a lock ($1, normal form) with users and groups resolved: "a4|a6 ADDR",
# "u NAME UID", "g NAME GID", "m UID" (group member), "x user|group
# NAME" (not found), "l" (log-blocked) and "f PATTERN".
resolve_lock() {
	local key value id db
	while read -r key value; do
		case $key in
		address) case $value in *:*) echo "a6 $value" ;; *) echo "a4 $value" ;; esac ;;
		user | group)
			db=group
			if [ "$key" = user ]; then db=passwd; fi
			if id=$(account_id "$db" "$value"); then
				echo "$(echo "$key" | cut -c1) $value $id"
				if [ "$key" = group ]; then group_members "$value" "$id"; fi
			else
				echo "x $key $value"
				log warning "$key '$value' not found: skipped, so it stays locked out"
				case " $MISSING " in *" $value "*) ;; *) MISSING="${MISSING:+$MISSING }$value" ;; esac
			fi
			;;
		log-blocked) echo l ;;
		block-forwarded) echo "f $value" ;;
		esac
	done <"$1"
}

# Validates the locks in $WORK/new and, unless $1 is "validate", resolves them
# into $WORK/res/NNNNN in file name order. Lock number n owns chain
# IPLOCKDOWN-n (nft: lock_n).
load_locks() {
	local f n=0 i=0
	rm -rf "$WORK/res" "$WORK/norm"
	mkdir "$WORK/res" "$WORK/norm"
	for f in "$WORK"/new/*.conf; do
		if [ -f "$f" ]; then
			n=$((n + 1))
			parse_lock "$f" "$CONF_DIR/${f##*/}" >"$WORK/norm/$n"
			f=${f##*/}
			echo "n ${f%.conf}" >"$WORK/res/$(printf %05d $n)"
		fi
	done
	LOCKS=$n
	while [ "$1" != validate ] && [ $((i += 1)) -le "$n" ]; do
		resolve_lock "$WORK/norm/$i" >>"$WORK/res/$(printf %05d $i)"
	done
}

# Picks the backend and sets BACKEND, VARIANT and FAMS (4 and 6 for iptables,
# nft for nft).
detect_backend() {
	if [ "$BACKEND" != nft ] && command -v iptables-restore >/dev/null 2>&1 && iptables -w "$WAIT" -S OUTPUT >/dev/null 2>&1; then
		BACKEND=iptables FAMS=4
		VARIANT=$(iptables -V 2>&1 || :)
		if command -v ip6tables-restore >/dev/null 2>&1 && ip6tables -w "$WAIT" -S OUTPUT >/dev/null 2>&1; then FAMS="4 6"; fi
	elif [ "$BACKEND" != iptables ] && command -v nft >/dev/null 2>&1 && nft list tables >/dev/null 2>&1; then
		BACKEND=nft FAMS=nft
		VARIANT=$(nft -v 2>&1 || :)
	elif [ "$BACKEND" = auto ]; then
		die 3 "no usable firewall backend: neither iptables nor nft works (install one; run as root)"
	else
		die 3 "backend $BACKEND is missing or does not work (run as root)"
	fi
}

ipt() { "ip${FAM#4}tables" -w "$WAIT" "$@"; }

# Prints the first rule of built-in chain $1 and its number of jumps to $2.
print_jumps() {
	printf '%s 1: %s\n%s jumps: %s\n' "$1" "$(sed -n "/^-A $1 /{p;q;}" "$WORK/all")" \
		"$1" "$(grep -cxF -- "-A $1 -j $2" "$WORK/all" || :)"
}

# Lists the filter table of family $FAM into $WORK/all, our chains into
# $WORK/ours, and prints our rules in the form render_ipt prints them.
list_ipt() {
	local chain
	ipt -S >"$WORK/all" || return 1
	sed -n 's/^-N \(IPLOCKDOWN\(-.*\)\{0,1\}\)$/\1/p' "$WORK/all" >"$WORK/names"
	{
		grep -x IPLOCKDOWN "$WORK/names" || :
		grep -x 'IPLOCKDOWN-[0-9]*' "$WORK/names" | sort -t- -k2,2n || :
		grep -vx 'IPLOCKDOWN\(-[0-9]*\)\{0,1\}' "$WORK/names" || :
	} >"$WORK/ours"

	if grep -qx IPLOCKDOWN "$WORK/ours" || grep -qxF -- '-A OUTPUT -j IPLOCKDOWN' "$WORK/all"; then
		print_jumps OUTPUT IPLOCKDOWN
	fi
	while read -r chain; do
		grep -E "^-[NA] $chain( |\$)" "$WORK/all" || :
	done <"$WORK/ours"
	if grep -qx IPLOCKDOWN-FWD "$WORK/ours" || grep -qxF -- '-A FORWARD -j IPLOCKDOWN-FWD' "$WORK/all"; then
		print_jumps FORWARD IPLOCKDOWN-FWD
		if grep -qxF -- '-N DOCKER-USER' "$WORK/all"; then print_jumps DOCKER-USER IPLOCKDOWN-FWD; fi
	fi
}

# Prints the rules family $FAM should have, as `iptables -S` prints them, and
# the first rule and jump count each built-in chain should have. IPLOCKDOWN
# sends an address to every lock naming it, so a process must pass them all.
render_ipt() {
	local bits=32 reject=icmp-port-unreachable f n=0 key value id dest pattern patterns log chain
	if [ "$FAM" = 6 ]; then bits=128 reject=icmp6-port-unreachable; fi
	: >"$WORK/d"
	: >"$WORK/c"
	: >"$WORK/w"
	for f in "$WORK"/res/*; do
		n=$((n + 1))
		chain=IPLOCKDOWN-$n
		if [ ! -f "$f" ] || ! grep -q "^a$FAM " "$f"; then continue; fi
		echo "-N $chain" >>"$WORK/c"
		patterns=$(sed -n 's/^f //p' "$f")
		log=$(sed -n 's/^l$/y/p' "$f")
		while read -r key value id; do
			case $key in
			"a$FAM")
				case $value in */*) dest=$value ;; *) dest=$value/$bits ;; esac
				echo "-A IPLOCKDOWN -d $dest -j $chain" >>"$WORK/d"
				for pattern in $patterns; do
					pattern="-A IPLOCKDOWN-FWD -d $dest -i $pattern"
					if [ -n "$log" ]; then echo "$pattern $LOG_RULE" >>"$WORK/w"; fi
					echo "$pattern -p tcp -j REJECT --reject-with tcp-reset" >>"$WORK/w"
					echo "$pattern -j REJECT --reject-with $reject" >>"$WORK/w"
				done
				;;
			u) echo "-A $chain -m owner --uid-owner $id -j RETURN" >>"$WORK/c" ;;
			g) echo "-A $chain -m owner --gid-owner $id$SUPPL -j RETURN" >>"$WORK/c" ;;
			m) if [ -z "$SUPPL" ]; then echo "-A $chain -m owner --uid-owner $value -j RETURN" >>"$WORK/c"; fi ;;
			esac
		done <"$f"
		if [ -n "$log" ]; then echo "-A $chain $LOG_RULE --log-uid" >>"$WORK/c"; fi
		echo "-A $chain -p tcp -j REJECT --reject-with tcp-reset" >>"$WORK/c"
		echo "-A $chain -j REJECT --reject-with $reject" >>"$WORK/c"
	done

	if [ -s "$WORK/d" ]; then
		echo 'OUTPUT 1: -A OUTPUT -j IPLOCKDOWN'
		echo 'OUTPUT jumps: 1'
		echo '-N IPLOCKDOWN'
		# Packets the kernel sends on its own pass: resets and time-wait ACKs
		# from its control and time-wait sockets, ICMP errors. No user process
		# sends them, and rejecting them breaks TCP teardown. The inverted uid
		# range matches exactly these, because xt_owner treats a packet with no
		# socket, or a socket with no file, as owned by nobody; a process socket
		# always has a uid below 4294967295. `! --socket-exists` would miss the
		# control socket's resets.
		echo '-A IPLOCKDOWN -m owner ! --uid-owner 0-4294967294 -j RETURN'
		cat "$WORK/d" "$WORK/c"
	fi
	if [ -s "$WORK/w" ]; then
		echo '-N IPLOCKDOWN-FWD'
		cat "$WORK/w"
		echo 'FORWARD 1: -A FORWARD -j IPLOCKDOWN-FWD'
		echo 'FORWARD jumps: 1'
		if grep -qxF -- '-N DOCKER-USER' "$WORK/all"; then
			echo 'DOCKER-USER 1: -A DOCKER-USER -j IPLOCKDOWN-FWD'
			echo 'DOCKER-USER jumps: 1'
		fi
	fi
}

# Prints the iptables-restore input that turns the live rules into the rules
# rendered in $1. It declares our chains (which flushes them) and refills
# them, moves our jumps to the front and deletes stale chains of ours. It never
# declares a built-in or foreign chain, because in --noflush mode that
# flushes the chain.
build_ipt() {
	local chain target count add
	echo '*filter'
	sed -n 's/^-N \(.*\)/:\1 - [0:0]/p' "$1"
	: >"$WORK/stale"
	while read -r chain; do
		if ! grep -qxF -- "-N $chain" "$1"; then
			echo ":$chain - [0:0]"
			echo "-X $chain" >>"$WORK/stale"
		fi
	done <"$WORK/ours"
	for chain in OUTPUT:IPLOCKDOWN FORWARD:IPLOCKDOWN-FWD DOCKER-USER:IPLOCKDOWN-FWD; do
		target=${chain#*:}
		chain=${chain%:*}
		count=$(grep -cxF -- "-A $chain -j $target" "$WORK/all" || :)
		add=$(grep -xF "$chain 1: -A $chain -j $target" "$1" || :)
		if [ -n "$add" ] && [ "$count" = 1 ] && grep -qxF "$add" "$WORK/live"; then continue; fi
		while [ "$count" -gt 0 ]; do
			echo "-D $chain -j $target"
			count=$((count - 1))
		done
		if [ -n "$add" ]; then echo "-I $chain 1 -j $target"; fi
	done
	grep '^-A IPLOCKDOWN' "$1" || :
	cat "$WORK/stale"
	echo COMMIT
}

# Prints the ids that sed script $1 selects from lock $2, as "1, 2".
id_set() { sed -n "$1" "$2" | sort -un | paste -s -d , - | sed 's/,/, /g'; }

# Prints the nft input that replaces table inet ip_lockdown in one transaction.
# Its chains hook in at priority -1, before the iptables filter chains (0).
render_nft() {
	local f n=0 key value id log family pattern patterns ids
	echo 'table inet ip_lockdown'
	echo 'delete table inet ip_lockdown'
	: >"$WORK/d"
	: >"$WORK/c"
	: >"$WORK/w"
	for f in "$WORK"/res/*; do
		n=$((n + 1))
		if [ ! -f "$f" ] || ! grep -q '^a' "$f"; then continue; fi
		log=''
		if grep -qx l "$f"; then log=$NFT_LOG; fi
		patterns=$(sed -n 's/^f //p' "$f")
		while read -r key value id; do
			case $key in a4) family=ip ;; a6) family=ip6 ;; *) continue ;; esac
			echo "$family daddr $value jump lock_$n" >>"$WORK/d"
			for pattern in $patterns; do
				case $pattern in *+) pattern="${pattern%+}*" ;; esac
				pattern="iifname \"$pattern\" $family daddr $value"
				if [ -n "$log" ]; then echo "$pattern $log" >>"$WORK/w"; fi
				echo "$pattern meta l4proto tcp reject with tcp reset" >>"$WORK/w"
				echo "$pattern reject" >>"$WORK/w"
			done
		done <"$f"
		{
			echo "chain lock_$n {"
			ids=$(id_set 's/^u [^ ]* //p; s/^m //p' "$f")
			if [ -n "$ids" ]; then echo "meta skuid { $ids } return"; fi
			ids=$(id_set 's/^g [^ ]* //p' "$f")
			if [ -n "$ids" ]; then echo "meta skgid { $ids } return"; fi
			if [ -n "$log" ]; then echo "$log flags skuid"; fi
			echo 'meta l4proto tcp reject with tcp reset'
			echo reject
			echo '}'
		} >>"$WORK/c"
	done

	if [ ! -s "$WORK/d" ] && [ ! -s "$WORK/w" ]; then return; fi
	echo 'table inet ip_lockdown {'
	if [ -s "$WORK/d" ]; then
		echo 'chain output {'
		echo 'type filter hook output priority -1; policy accept;'
		# meta skuid matches only packets of a full socket, so packets the
		# kernel sends on its own (resets, time-wait ACKs, ICMP errors) pass.
		# No user process sends them, and rejecting them breaks TCP teardown.
		echo 'meta skuid 0-4294967295 jump locks'
		echo '}'
		echo 'chain locks {'
		cat "$WORK/d"
		echo '}'
		cat "$WORK/c"
	fi
	if [ -s "$WORK/w" ]; then
		echo 'chain forward {'
		echo 'type filter hook forward priority -1; policy accept;'
		cat "$WORK/w"
		echo '}'
	fi
	echo '}'
}

# Counts the rules (not tables, chains or hooks) in nft input or a listing.
count_nft_rules() {
	sed 's/^[[:space:]]*//' "$1" | grep -cv -e '^table ' -e '^delete ' -e '^chain ' -e '^type ' -e '^}' -e '^$' || :
}

list_live() {
	if [ "$FAM" != nft ]; then
		list_ipt
	elif nft list table inet ip_lockdown 2>/dev/null; then
		:
	fi
}

render() { if [ "$FAM" = nft ]; then render_nft; else render_ipt; fi; }

build_tx() { if [ "$FAM" = nft ]; then cat "$1"; else build_ipt "$1"; fi; }

tool() { if [ "$FAM" = nft ]; then echo nft; else echo "ip${FAM#4}tables-restore"; fi; }

# Runs the transaction in $1. An iptables transaction that changes nothing is
# skipped.
run_tx() {
	if [ "$FAM" = nft ]; then
		nft -f "$1"
	elif [ "$(grep -c . "$1")" -gt 2 ]; then
		"$(tool)" -w "$WAIT" --noflush <"$1"
	fi
}

# Checks that the rules read back are the rules intended. nft reformats rules
# when it lists them, so for nft only the number of rules is compared.
verify_live() {
	if [ "$FAM" = nft ]; then
		[ "$(count_nft_rules "$WORK/exp")" = "$(count_nft_rules "$WORK/live")" ]
	else
		cmp -s "$WORK/exp" "$WORK/live"
	fi
}

save_state() {
	mkdir -p "$STATE_DIR"
	echo "$BACKEND" >"$STATE_DIR/backend"
	cp "$WORK/exp" "$STATE_DIR/exp-$FAM"
	cp "$WORK/live" "$STATE_DIR/live-$FAM"
}

# Prints the addresses that rendered rules ($1) lock.
addresses() {
	sed -n -e 's/^-A IPLOCKDOWN -d \([^ ]*\) -j .*/\1/p' -e 's/^ip6\{0,1\} daddr \([^ ]*\) jump .*/\1/p' "$1" | sort -u
}

# Succeeds when the rules of the last apply are still live and lock every
# address the failed rules would have locked.
previous_rules_cover() {
	if [ ! -f "$STATE_DIR/live-$FAM" ] || ! cmp -s "$WORK/live" "$STATE_DIR/live-$FAM"; then return 1; fi
	addresses "$WORK/exp" >"$WORK/want"
	addresses "$STATE_DIR/exp-$FAM" >"$WORK/have"
	[ -z "$(grep -vxF -f "$WORK/have" "$WORK/want" || :)" ]
}

# Probes whether the kernel accepts an owner match with options "$@", in a
# chain of our own. It uses iptables, not iptables-restore, so that a restore
# failing for another reason is not taken for a missing owner match.
owner_match_works() {
	local ok=''
	ipt -N IPLOCKDOWN-PROBE 2>/dev/null || :
	if ipt -A IPLOCKDOWN-PROBE -m owner "$@" -j RETURN 2>/dev/null; then ok=1; fi
	ipt -F IPLOCKDOWN-PROBE 2>/dev/null || :
	ipt -X IPLOCKDOWN-PROBE 2>/dev/null || :
	[ -n "$ok" ]
}

# Handles a family whose rules could not be applied (error $1): unless the
# previous rules still lock every address, applies a fallback lock that
# rejects everyone (no owner match, no logging) for the addresses.
recover_family() {
	local what
	what="$(tool) failed: $1"
	RC=5
	if [ "$FAM" != nft ] && ! owner_match_works --uid-owner 0; then
		RC=3
		what="$what; the owner match does not work (iptables -m owner, kernel module xt_owner)"
	fi
	list_live >"$WORK/live" || :
	if previous_rules_cover; then
		log error "$what; the previous rules stay in place"
		return
	fi

	sed -e 's/^meta skuid 0-4294967295 //' -e '/ -j RETURN$/d; / return$/d; / -j LOG /d; / log prefix /d' "$WORK/exp" >"$WORK/fallback"
	mv "$WORK/fallback" "$WORK/exp"
	build_tx "$WORK/exp" >"$WORK/tx"
	if run_tx "$WORK/tx" 2>"$WORK/err" && list_live >"$WORK/live"; then
		save_state
		log error "$what; a fallback lock now rejects everyone for: $(addresses "$WORK/exp" | paste -s -d ' ' -)"
	else
		rm -f "$STATE_DIR/exp-$FAM" "$STATE_DIR/live-$FAM"
		log error "$what; the fallback lock failed too ($(head -n 1 "$WORK/err")), so these may be reachable: $(addresses "$WORK/exp" | paste -s -d ' ' -)"
	fi
}

# Applies the rules of family $FAM: reads the live rules, builds the
# transaction, runs it and reads the rules back. When another tool changed the
# rules in between, the transaction fails or reads back wrong, so it is tried
# again.
apply_family() {
	local try=0 error=''
	while [ $((try += 1)) -le 3 ]; do
		list_live >"$WORK/live" || :
		render >"$WORK/exp"
		build_tx "$WORK/exp" >"$WORK/tx"
		if [ -n "$DRY_RUN" ]; then
			if [ "$FAM" = nft ] || [ "$(grep -c . "$WORK/tx")" -gt 2 ]; then
				echo "# $(tool) $(if [ "$FAM" = nft ]; then echo -f -; else echo "-w $WAIT --noflush"; fi)"
				cat "$WORK/tx"
			fi
			return
		fi
		if run_tx "$WORK/tx" 2>"$WORK/err" && list_live >"$WORK/live" && verify_live; then
			save_state
			return
		fi
		error=$(head -n 2 "$WORK/err" | paste -s -d ' ' -)
		error=${error:-the rules read back differ from the rules applied}
		log warning "attempt $try of 3: $(tool) failed: $error"
		# NOTE: a kernel whose owner match predates --suppl-groups rejects it.
		# Then groups are expanded to the users resolved now.
		if [ "$try" = 3 ] && grep -q -- ' --suppl-groups ' "$WORK/exp" && ! owner_match_works --gid-owner 0 --suppl-groups; then
			SUPPL='' try=0
			mkdir -p "$STATE_DIR"
			: >"$STATE_DIR/no-suppl-groups"
			log warning 'the kernel has no --suppl-groups: a group admits its primary members and the users it lists, as resolved now'
		fi
	done
	recover_family "$error"
}

# Rewrites the saved locks without address $UNLOCK and deletes a lock left
# with no address. Lines are copied with a read loop, never through sed, so no
# value from the command line is ever taken for a pattern.
unlock_address() {
	local f line hit kept found=''
	for f in "$WORK"/new/*.conf; do
		if [ ! -f "$f" ]; then continue; fi
		hit='' kept=''
		while IFS= read -r line || [ -n "$line" ]; do
			set -f
			# shellcheck disable=SC2086 # split the line into words, with globbing off
			set -- $line
			set +f
			if [ $# = 2 ] && [ "$1" = address ]; then
				if [ "$(canon_ip "$2")" = "$UNLOCK" ]; then
					hit=1 found=1
					continue
				fi
				kept=1
			fi
			printf '%s\n' "$line"
		done <"$f" >"$f.new"
		mv "$f.new" "$f"
		if [ -n "$hit" ] && [ -z "$kept" ]; then
			rm "$f"
			log info "deleted lock ${f##*/}: it has no address left"
		fi
	done
	if [ -z "$found" ]; then log warning "$UNLOCK is in no saved lock"; fi
}

# Makes the saved locks equal to $WORK/new, replacing each file atomically.
save_config() {
	local f
	mkdir -p "$CONF_DIR"
	for f in "$CONF_DIR"/*.conf; do
		if [ -f "$f" ] && [ ! -f "$WORK/new/${f##*/}" ]; then rm "$f"; fi
	done
	for f in "$WORK"/new/*.conf; do
		if [ -f "$f" ] && ! cmp -s "$f" "$CONF_DIR/${f##*/}"; then
			cp "$f" "$CONF_DIR/.new"
			chmod 0644 "$CONF_DIR/.new"
			mv "$CONF_DIR/.new" "$CONF_DIR/${f##*/}"
		fi
	done
}

# Waits for other runs to finish: flock, else a lock directory.
take_lock() {
	local i=0
	mkdir -p "${LOCK_FILE%/*}"
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$LOCK_FILE"
		flock -w 300 9 || die 5 "timed out after 300 s waiting for $LOCK_FILE"
		return
	fi
	until mkdir "$LOCK_FILE.d" 2>/dev/null; do
		if [ $((i += 1)) -gt 300 ]; then die 5 "timed out after 300 s waiting for $LOCK_FILE.d (remove it if no $PROG is running)"; fi
		sleep 1
	done
	LOCK_DIR=$LOCK_FILE.d
}

# Copies the saved locks to $WORK/new and applies the requested change there.
prepare_locks() {
	local f value
	mkdir "$WORK/new"
	for f in "$CONF_DIR"/*.conf; do
		if [ -f "$f" ]; then cp "$f" "$WORK/new/"; fi
	done
	case $MODE in
	config) cp "$CONFIG" "$WORK/new/$NAME.conf" ;;
	unlock) unlock_address ;;
	classic)
		{
			echo "# Saved by $PROG from the command line."
			for value in $IPS; do echo "address $value"; done
			for value in $USERS; do echo "user $value"; done
			for value in $GROUP_NAMES; do echo "group $value"; done
			if [ -n "$LOG_BLOCKED" ]; then echo log-blocked; fi
			for value in $PATTERNS; do echo "block-forwarded $value"; done
		} >"$WORK/new/$NAME.conf"
		;;
	esac
}

# Saves the requested change and applies every saved lock.
apply_locks() {
	local summary_text
	if [ -z "$DRY_RUN" ]; then take_lock; fi
	prepare_locks
	load_locks validate
	detect_backend
	load_locks resolve
	if [ -f "$STATE_DIR/no-suppl-groups" ]; then SUPPL=''; fi
	if [ "$FAMS" = 4 ] && grep -q '^a6' "$WORK"/res/* 2>/dev/null; then die 3 "IPv6 addresses are locked, but ip6tables does not work"; fi
	if [ -z "$DRY_RUN" ]; then save_config; fi

	for FAM in $FAMS; do apply_family; done

	summary_text="$LOCKS locks, $(cat "$WORK"/res/* 2>/dev/null | sed -n 's/^a. //p' | sort -u | grep -c . || :) addresses, $VARIANT"
	if [ "$RC" = 0 ] && [ -n "$MISSING" ]; then RC=4; fi
	if [ -n "$DRY_RUN" ]; then
		log info "dry run, nothing changed: $summary_text"
	elif [ "$RC" = 0 ]; then
		summary info "applied $summary_text"
	elif [ "$RC" = 4 ]; then
		summary warning "applied $summary_text; not found, so locked out: $MISSING"
	else
		summary error "failed to apply $summary_text (see above)"
	fi
	exit "$RC"
}

# Prints each lock with its resolved users and groups, the backend, and whether
# the live rules still match what applying the configuration now would make.
show_status() {
	local f key value id drift=''
	prepare_locks
	load_locks validate
	detect_backend
	load_locks resolve
	if [ -f "$STATE_DIR/no-suppl-groups" ]; then SUPPL=''; fi
	if [ "$LOCKS" = 0 ]; then echo 'no locks saved'; fi
	for f in "$WORK"/res/*; do
		if [ ! -f "$f" ]; then continue; fi
		while read -r key value id; do
			case $key in
			n) echo "lock $value" ;;
			a?) echo "  address $value" ;;
			u) echo "  user $value (uid $id)" ;;
			g) echo "  group $value (gid $id)" ;;
			x) echo "  $value $id: not found, locked out" ;;
			l) echo '  log-blocked' ;;
			f) echo "  block-forwarded $value" ;;
			esac
		done <"$f"
	done
	echo "backend: $BACKEND ($VARIANT)"

	if [ "$(cat "$STATE_DIR/backend" 2>/dev/null)" != "$BACKEND" ]; then drift='nothing applied with this backend since boot'; fi
	for FAM in $FAMS; do
		if [ -n "$drift" ]; then break; fi
		list_live >"$WORK/live" || :
		render >"$WORK/exp"
		if ! cmp -s "$WORK/exp" "$STATE_DIR/exp-$FAM"; then
			drift='the configuration or its users or groups changed since the last apply'
		elif ! cmp -s "$WORK/live" "$STATE_DIR/live-$FAM"; then
			drift='the live rules were changed, flushed or pushed down since the last apply'
		fi
	done
	if [ -n "$drift" ]; then
		echo "rules: drift: $drift; run $PROG --apply"
		exit 1
	fi
	echo 'rules: in place'
}

# Writes the boot unit and enables it with systemctl where it exists (which
# works offline, even in a chroot), else with the symlink systemctl makes.
unit_text() {
	cat <<EOF
[Unit]
Description=Lock IP addresses to allowed users (ip-lockdown)
DefaultDependencies=no
After=local-fs.target
Before=network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=$1 --apply

[Install]
WantedBy=sysinit.target
EOF
}

install_boot_service() {
	local self="$0" dir=.
	case $self in */*) dir=${self%/*} ;; esac
	case $self in /*) ;; *) self=$(cd "$dir" && pwd)/${self##*/} ;; esac
	case $self in *[!A-Za-z0-9/_.-]*) die 2 "install $PROG at a path of letters, digits and /_.- for the unit file, not '$self'" ;; esac
	if ! command -v systemctl >/dev/null 2>&1 && [ ! -d "${UNIT%/*}" ]; then
		summary info "no systemd found: the boot service was not installed"
		exit 0
	fi

	if [ "$DRY_RUN" = 1 ]; then
		unit_text "$self"
		log info "dry run, nothing changed: would install and enable $UNIT"
		exit 0
	fi

	mkdir -p "${UNIT%/*}"
	unit_text "$self" >"$UNIT.new"
	chmod 0644 "$UNIT.new"
	mv "$UNIT.new" "$UNIT"
	if ! command -v systemctl >/dev/null 2>&1 || ! systemctl enable "${UNIT##*/}" >/dev/null 2>&1; then
		mkdir -p "${UNIT%/*}/sysinit.target.wants"
		ln -sf "$UNIT" "${UNIT%/*}/sysinit.target.wants/${UNIT##*/}"
	fi
	summary info "installed and enabled $UNIT"
}

set_mode() {
	if [ -n "$MODE" ] && [ "$MODE" != "$1" ]; then die 2 "$2 cannot be combined with another form (see --help)"; fi
	MODE=$1
}

main() {
	local arg value
	MODE='' NAME='' CONFIG='' DRY_RUN='' BACKEND=auto LOG_BLOCKED='' PATTERNS='' GROUP_NAMES=''
	IPS='' USERS='' UNLOCK='' MISSING='' RC=0 WORK='' LOCK_DIR='' FAMS='' VARIANT='' LOCKS=0 SUPPL=' --suppl-groups'
	while [ $# -gt 0 ]; do
		arg=$1
		case $arg in --unlock | --config | --name | --group | --block-forwarded | --backend)
			[ $# -gt 1 ] || die 2 "$arg needs a value (see --help)"
			shift
			;;
		esac
		case $arg in
		-h | --help) MODE=help ;;
		--apply | --status | --install-boot-service) set_mode "${arg#--}" "$arg" ;;
		--unlock)
			set_mode unlock "$arg"
			UNLOCK=$(checked_ip "$1" --unlock) || exit 2
			;;
		--config)
			set_mode config "$arg"
			CONFIG=$1
			;;
		--name)
			is_lock_name "$1" || die 2 "invalid lock name '$1': expected [A-Za-z0-9][A-Za-z0-9_.-]*, at most 64 characters"
			NAME=$1
			;;
		--group)
			is_account "$1" || die 2 "invalid group '$1': $NAME_FORM"
			GROUP_NAMES="$GROUP_NAMES $1"
			;;
		--block-forwarded)
			is_iface_pattern "$1" || die 2 "invalid interface pattern '$1': $IFACE_FORM"
			PATTERNS="$PATTERNS $1"
			;;
		--backend)
			case $1 in auto | iptables | nft) BACKEND=$1 ;; *) die 2 "invalid backend '$1': expected auto, iptables or nft" ;; esac
			;;
		--log-blocked) LOG_BLOCKED=1 ;;
		--dry-run) DRY_RUN=1 ;;
		-?*) die 2 "unknown option '$arg' (see --help)" ;;
		*)
			if [ "$MODE" = classic ]; then
				is_account "$arg" || die 2 "invalid user '$arg': $NAME_FORM"
				USERS="$USERS $arg"
			else
				set_mode classic "$arg"
				set -f
				for value in $(echo "$arg" | tr , ' '); do
					value=$(checked_ip "$value" argument) || exit 2
					case "$IPS " in *" $value "*) ;; *) IPS="$IPS $value" ;; esac
				done
				set +f
				[ -n "$IPS" ] || die 2 "invalid address list '$arg': $ADDR_FORM"
			fi
			;;
		esac
		shift
	done

	case $MODE in
	help)
		usage
		exit 0
		;;
	'') die 2 'nothing to do (see --help)' ;;
	classic) NAME=${NAME:-cli-$(echo "${IPS# }" | tr -c 'A-Za-z0-9_.\n-' - | cut -c1-60)} ;;
	config)
		if [ ! -f "$CONFIG" ] || [ ! -r "$CONFIG" ]; then die 2 "cannot read config file '$CONFIG'"; fi
		if [ -z "$NAME" ]; then
			NAME=$(basename "$CONFIG" .conf)
			is_lock_name "$NAME" || die 2 "cannot use '$NAME' as a lock name: give --name NAME"
		fi
		;;
	esac
	if [ "$MODE" != classic ] && [ -n "$GROUP_NAMES$LOG_BLOCKED$PATTERNS" ]; then
		die 2 '--group, --log-blocked and --block-forwarded need the IP [USER...] form (in a file: group, log-blocked, block-forwarded lines)'
	fi
	if [ "$MODE" = install-boot-service ]; then
		install_boot_service
		exit 0
	fi

	WORK=$(mktemp -d "${TMPDIR:-/tmp}/$PROG.XXXXXX")
	trap cleanup EXIT
	trap 'exit 1' HUP INT TERM
	if [ "$MODE" = config ]; then parse_lock "$CONFIG" "$CONFIG" >/dev/null; fi
	if [ "$MODE" = status ]; then show_status; else apply_locks; fi
}

main "$@"
