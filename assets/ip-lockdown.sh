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

# The address checks below set IP, not print it, so that checking an address
# starts no process.

# Sets IP to the 32-bit value of a dotted quad (0-255, no leading zeros).
ipv4_value() {
	local rest="$1." octet
	IP=0
	case $1 in *.*.*.*.* | *[!0-9.]*) return 1 ;; *.*.*.*) ;; *) return 1 ;; esac
	while [ -n "$rest" ]; do
		octet=${rest%%.*}
		rest=${rest#*.}
		case $octet in [0-9] | [1-9][0-9] | 1[0-9][0-9] | 2[0-4][0-9] | 25[0-5]) ;; *) return 1 ;; esac
		IP=$((IP * 256 + octet))
	done
}

# Sets IP to an IPv6 address as iptables and nft print it (RFC 5952):
# lowercase, no leading zeros, the first longest run of two or more zero
# groups as ::.
canon_ipv6() {
	local s="$1" w words='' run=:0:0:0:0:0:0:0:0: i
	IP=''
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
		x)
			i=$#
			while [ $((i += 1)) -le 9 ]; do words="$words 0"; done
			;;
		? | ?? | ??? | ????) words="$words $((0x$w))" ;;
		*) return 1 ;;
		esac
	done
	# shellcheck disable=SC2086 # split the decimal groups
	set -- $words
	[ $# = 8 ] || return 1
	if [ "$1$2$3$4$5" = 00000 ] && { [ "$6" = 0 ] || [ "$6" = 65535 ]; } && [ "$*" != '0 0 0 0 0 0 0 1' ]; then
		IP=':: and IPv4-mapped or -compatible addresses are not supported, lock the IPv4 address'
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
	IP=$s
}

# Sets IP to the canonical form of an address or IPv4 CIDR block (a /32
# becomes a plain address), or to why it is invalid and fails.
canon_ip() {
	local prefix="${1#*/}" why=''
	case $1 in
	*:*/*) why='IPv6 CIDR blocks are not supported, list the addresses' ;;
	*:*.*) why='IPv6 with an embedded IPv4 part is not supported, write it in hex' ;;
	*:*)
		canon_ipv6 "$1" && return
		why=$IP
		;;
	*/*)
		case $prefix in [1-9] | [12][0-9] | 3[0-2]) ;; *) prefix=0 ;; esac
		if [ "$prefix" != 0 ] && ipv4_value "${1%/*}"; then
			why='the host bits are not zero'
			if [ $((IP % (1 << (32 - prefix)))) = 0 ]; then
				IP=$1
				if [ "$prefix" = 32 ]; then IP=${1%/*}; fi
				return
			fi
		fi
		;;
	*) ipv4_value "$1" && IP=$1 && return ;;
	esac
	IP=${why:-$ADDR_FORM}
	return 1
}

# Sets IP to the canonical address, or exits 2 naming the value and where it
# came from.
checked_ip() {
	canon_ip "$1" || die 2 "$2: invalid address '$1': $IP"
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
	local where="$1"
	shift
	case ${1-#} in
	'#'*) return ;;
	log-blocked) [ $# = 1 ] || die 2 "$where: log-blocked takes no value" ;;
	address | user | group | block-forwarded) [ $# = 2 ] || die 2 "$where: $1 takes one value" ;;
	*) die 2 "$where: invalid line '$*': expected address, user, group, log-blocked or block-forwarded" ;;
	esac
	case $1 in
	address)
		checked_ip "$2" "$where"
		set -- address "$IP"
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

# Validates the locks in $WORK, in file name order, into $WORK/norm, where
# "n NAME" starts each lock. Lock number n owns chain IPLOCKDOWN-n (nft: lock_n).
load_locks() {
	local f n=0
	: >"$WORK/norm"
	for f in "$WORK"/*.conf; do
		if [ -f "$f" ]; then
			n=$((n + 1))
			f=${f##*/}
			echo "n ${f%.conf}" >>"$WORK/norm"
			parse_lock "$WORK/$f" "$CONF_DIR/$f" >>"$WORK/norm"
		fi
	done
	LOCKS=$n
}

# Resolves the users and groups of all locks into $WORK/res: "n NAME" (starts
# a lock), "a4|a6 ADDR", "u NAME UID", "g NAME GID", "m UID" (group member:
# listed in the group or having it as primary group), "x user|group NAME"
# (not found), "l" (log-blocked) and "b PATTERN" (block-forwarded). A numeric
# id stands for itself. One getent call per database looks up all names at
# once, because a process per name makes a run with many users slow. Without
# getent, /etc/passwd and /etc/group are read. Sets HAS6 when a lock has an
# IPv6 address and ADDRS to the number of distinct addresses.
# NOTE: getent entries are matched to names by their first field, so an NSS
# source that returns, for a name, an entry of another name (case folding,
# domain suffix) leaves that user or group not found.
resolve_locks() {
	local key value users='' groups='' pwf=/etc/passwd grf=/etc/group allf=/dev/null scan=1
	while read -r key value; do
		case $key in
		user) case $value in *[!0-9]*) users="$users $value" ;; esac ;;
		group) groups="$groups $value" ;;
		esac
	done <"$WORK/norm"

	if command -v getent >/dev/null 2>&1; then
		pwf=$WORK/pw grf=$WORK/gr scan=''
		: >"$pwf"
		: >"$grf"
		set -f
		# shellcheck disable=SC2086 # one key per word: names are validated, globbing is off
		if [ -n "$groups" ]; then
			getent group $groups >"$grf" || :
			allf=$WORK/allpw
			getent passwd >"$allf" || :
		fi
		while IFS=: read -r _ _ _ value; do users="$users $value"; done <"$grf"
		IFS=' ,'
		# shellcheck disable=SC2086 # as above, and group members are listed with commas
		if [ -n "$users" ]; then getent passwd $users >"$pwf" || :; fi
		unset IFS
		set +f
	fi

	[ -r "$pwf" ] || pwf=/dev/null
	[ -r "$grf" ] || grf=/dev/null
	: >"$WORK/info"
	awk -F: -v pwf="$pwf" -v grf="$grf" -v allf="$allf" -v scan="$scan" -v info="$WORK/info" '
		FILENAME == pwf {
			if (!($1 in uid)) uid[$1] = $3
			if (scan) pri[$4] = pri[$4] " " $3
			next
		}
		FILENAME == grf {
			if (!($1 in gr)) gr[$1] = $0
			if (!($3 in gr)) gr[$3] = $0
			next
		}
		FILENAME == allf {
			pri[$4] = pri[$4] " " $3
			next
		}
		{
			split($0, w, " ")
			id = w[2]
			split(gr[id], e, ":")
		}
		w[1] == "address" {
			f = w[2] ~ /:/ ? "a6" : "a4"
			if (!(id in A)) print f >info
			A[id] = 1
			print f, id
			next
		}
		w[1] !~ /^(user|group)$/ {
			print substr(w[1], 1, 1), id
			next
		}
		id !~ /^[0-9]+$/ { id = w[1] == "user" ? uid[id] : e[3] }
		id == "" {
			print "x", w[1], w[2]
			print w[1], w[2] >info
			next
		}
		{ print substr(w[1], 1, 1), w[2], id }
		w[1] == "group" {
			k = split(e[4], m, /[, \t]+/)
			for (i = 1; i <= k; i++) if (m[i] ~ /^[0-9]+$/ || m[i] in uid) print "m", m[i] ~ /^[0-9]+$/ ? m[i] : uid[m[i]]
			k = split(pri[id], m, " ")
			for (i = 1; i <= k; i++) print "m", m[i]
		}
	' "$pwf" "$grf" "$allf" "$WORK/norm" >"$WORK/res"

	while read -r key value; do
		case $key in
		a4) ADDRS=$((ADDRS + 1)) ;;
		a6) ADDRS=$((ADDRS + 1)) HAS6=1 ;;
		*)
			log warning "$key '$value' not found: skipped, so it stays locked out"
			case " $MISSING " in *" $value "*) ;; *) MISSING="${MISSING:+$MISSING }$value" ;; esac
			;;
		esac
	done <"$WORK/info"
}

# Picks the backend and sets BACKEND, VARIANT and FAMS (4, or 4 and 6, for
# iptables; nft for nft). The listing that shows a backend works is kept as
# the first listing of its family in $WORK/all4, all6 or allnft.
detect_backend() {
	if [ "$BACKEND" != nft ] && command -v iptables-restore >/dev/null 2>&1 && iptables -w "$WAIT" -S >"$WORK/all4" 2>/dev/null; then
		BACKEND=iptables FAMS=4
		VARIANT=$(iptables -V 2>&1 || :)
		if command -v ip6tables-restore >/dev/null 2>&1 && ip6tables -w "$WAIT" -S >"$WORK/all6" 2>/dev/null; then FAMS="4 6"; fi
	elif [ "$BACKEND" != iptables ] && command -v nft >/dev/null 2>&1 &&
		{ nft list table inet ip_lockdown >"$WORK/allnft" 2>/dev/null || nft list tables >/dev/null 2>&1; }; then
		BACKEND=nft FAMS=nft
		VARIANT=$(nft -v 2>&1 || :)
	elif [ "$BACKEND" = auto ]; then
		die 3 "no usable firewall backend: neither iptables nor nft works (install one; run as root)"
	else
		die 3 "backend $BACKEND is missing or does not work (run as root)"
	fi
}

# Drops family 6 when no lock has an IPv6 address, ip6tables has no chain of
# ours and the last apply left no IPv6 rules: each family costs a listing, a
# transaction and a read-back.
skip_unused_ipv6() {
	local line
	if [ "$FAMS" != "4 6" ] || [ -n "$HAS6" ] || [ -s "$STATE_DIR/exp-6" ]; then return; fi
	while read -r line; do
		case $line in "-N IPLOCKDOWN"*) return ;; esac
	done <"$WORK/all6"
	FAMS=4
}

ipt() { "ip${FAM#4}tables" -w "$WAIT" "$@"; }

# Lists the live rules of family $FAM into $WORK/all$FAM.
list_live() {
	if [ "$FAM" = nft ]; then
		nft list table inet ip_lockdown >"$WORK/allnft" 2>/dev/null || :
	else
		ipt -S >"$WORK/all$FAM"
	fi
}

# Lists, renders and compares the rules of family $FAM in one awk run over
# the listing $WORK/all$FAM, because a process per chain or check made every
# run slow. Mode $1:
#   r  render the resolved locks ($WORK/res) into exp-$FAM, list our live
#      rules into live-$FAM and build the transaction into tx
#   s  render and list; exit 3 when the rendered rules differ from those of
#      the last apply ($STATE_DIR/exp-$FAM), 4 when the live rules do
#   v  list; exit 4 when the live rules differ from exp-$FAM. nft reformats
#      rules when it lists them, so for nft only the number of rules counts.
#   l  list only
#   b  build the transaction from exp-$FAM as it is (the fallback lock)
# Our live iptables rules take the form of the rendered ones: the first rule
# and jump count of each built-in chain that jumps to ours, then our chains in
# the order IPLOCKDOWN, IPLOCKDOWN-n by n, others. The nft listing is taken
# as it is. The nft transaction replaces table inet ip_lockdown. The iptables
# transaction (empty when nothing changes) declares our chains (which flushes
# them) and refills them, moves our jumps to the front and deletes stale
# chains of ours. It never declares a built-in or foreign chain, because in
# --noflush mode that flushes the chain.
#
# IPLOCKDOWN sends an address to every lock naming it, so a process must pass
# them all. Packets the kernel sends on its own pass: resets and time-wait ACKs
# from its control and time-wait sockets, ICMP errors. No user process sends
# them, and rejecting them breaks TCP teardown. On iptables the inverted uid
# range matches exactly these, because xt_owner treats a packet with no
# socket, or a socket with no file, as owned by nobody; a process socket
# always has a uid below 4294967295. `! --socket-exists` would miss the
# control socket's resets. On nft, meta skuid matches only packets of a full
# socket. The nft chains hook in at priority -1, before the iptables filter
# chains (0).
plan() {
	local src=/dev/null
	case $1 in [rs]) src=$WORK/res ;; b) src=$WORK/exp-$FAM ;; esac
	awk -v m="$1" -v fam="$FAM" -v dir="$WORK/" -v sd="$STATE_DIR/" -v suppl="$SUPPL" -v iptlog="$LOG_RULE" -v nftlog="$NFT_LOG" '
	function slurp(f,   s, l, r) {
		while ((r = (getline l <f)) > 0) s = s l "\n"
		close(f)
		return r < 0 ? "\001" : s
	}
	function rules(s,   a, i, r) {
		for (i = split(s, a, "\n"); i; i--) if (a[i] !~ /^[ \t]*((table|delete|chain|type) |}|$)/) r++
		return r + 0
	}
	function put(a, x, y, u,   i, j) {
		for (i = 1; i <= a[0] && (K[a[i]] < y || !u && K[a[i]] == y && a[i] < x); i++) ;
		if (u && i <= a[0] && K[a[i]] == y) return
		for (j = ++a[0]; j > i; j--) a[j] = a[j - 1]
		a[i] = x
		K[x] = y
	}
	function join(a,   i, s) {
		for (i = 1; i <= a[0]; i++) s = s (i > 1 ? ", " : "") a[i]
		return s
	}
	function jumps(c, t) { return c " 1: " first[c] "\n" c " jumps: " (cnt["-A " c " -j " t] + 0) "\n" }
	function rendered(   i, j, s, x, y, a, f, p, np, q, c, C, d, w, r, L, on, ch) {
		r = fam == 6 ? "icmp6-port-unreachable" : "icmp-port-unreachable"
		for (i = 1; i <= n; i++) {
			np = split(pat[i], p, " ")
			L = i in lg
			split("", U)
			split("", G)
			c = on = ""
			ch = "-A IPLOCKDOWN-" i
			for (j = 1; j <= nk[i]; j++) {
				x = k[i, j]
				a = v[i, j]
				y = id[i, j]
				if (x ~ /^a/ && (fam == "nft" || x == "a" fam)) {
					on = 1
					if (fam == "nft") {
						f = (x == "a6" ? "ip6" : "ip") " daddr " a
						d = d f " jump lock_" i "\n"
					} else {
						f = "-d " a (a ~ /\// ? "" : fam == 6 ? "/128" : "/32")
						d = d "-A IPLOCKDOWN " f " -j IPLOCKDOWN-" i "\n"
					}
					for (s = 1; s <= np; s++) {
						q = p[s]
						if (fam == "nft") {
							sub(/\+$/, "*", q)
							q = "iifname \"" q "\" " f
							w = w (L ? q " " nftlog "\n" : "") q " meta l4proto tcp reject with tcp reset\n" q " reject\n"
						} else {
							q = "-A IPLOCKDOWN-FWD " f " -i " q
							w = w (L ? q " " iptlog "\n" : "") q " -p tcp -j REJECT --reject-with tcp-reset\n" q " -j REJECT --reject-with " r "\n"
						}
					}
				}
				if (x == "m") y = a
				if (x == "u" || x == "m") {
					put(U, y, y + 0, 1)
					if (x == "u" || suppl == "") c = c ch " -m owner --uid-owner " y " -j RETURN\n"
				}
				if (x == "g") {
					put(G, y, y + 0, 1)
					c = c ch " -m owner --gid-owner " y suppl " -j RETURN\n"
				}
			}
			if (!on) continue
			if (fam == "nft") c = "chain lock_" i " {\n" (U[0] ? "meta skuid { " join(U) " } return\n" : "") (G[0] ? "meta skgid { " join(G) " } return\n" : "") (L ? nftlog " flags skuid\n" : "") "meta l4proto tcp reject with tcp reset\nreject\n}\n"
			else c = "-N IPLOCKDOWN-" i "\n" c (L ? ch " " iptlog " --log-uid\n" : "") ch " -p tcp -j REJECT --reject-with tcp-reset\n" ch " -j REJECT --reject-with " r "\n"
			C = C c
		}
		if (fam == "nft") {
			s = "table inet ip_lockdown\ndelete table inet ip_lockdown\n"
			if (d w == "") return s
			return s "table inet ip_lockdown {\n" (d == "" ? "" : "chain output {\ntype filter hook output priority -1; policy accept;\nmeta skuid 0-4294967295 jump locks\n}\nchain locks {\n" d "}\n" C) (w == "" ? "" : "chain forward {\ntype filter hook forward priority -1; policy accept;\n" w "}\n") "}\n"
		}
		s = d == "" ? "" : "OUTPUT 1: -A OUTPUT -j IPLOCKDOWN\nOUTPUT jumps: 1\n-N IPLOCKDOWN\n-A IPLOCKDOWN -m owner ! --uid-owner 0-4294967294 -j RETURN\n" d C
		if (w != "") s = s "-N IPLOCKDOWN-FWD\n" w "FORWARD 1: -A FORWARD -j IPLOCKDOWN-FWD\nFORWARD jumps: 1\n" (cnt["-N DOCKER-USER"] ? "DOCKER-USER 1: -A DOCKER-USER -j IPLOCKDOWN-FWD\nDOCKER-USER jumps: 1\n" : "")
		return s
	}
	FILENAME == ARGV[1] {
		lv = lv $0 "\n"
		if ($1 ~ /^-[NA]$/) body[$2] = body[$2] $0 "\n"
		if ($1 == "-A" && !($2 in first)) first[$2] = $0
		if ($0 ~ /^-N IPLOCKDOWN(-.*)?$/) put(own, $2, $2 == "IPLOCKDOWN" ? -1 : $2 ~ /^IPLOCKDOWN-[0-9]*$/ ? substr($2, 12) + 0 : 1e12 + NR)
		cnt[$0]++
		next
	}
	FILENAME == ARGV[2] && m ~ /[rs]/ {
		if ($1 == "n") {
			n++
			next
		}
		k[n, ++nk[n]] = $1
		v[n, nk[n]] = $2
		id[n, nk[n]] = $3
		if ($1 == "l") lg[n] = 1
		if ($1 == "b") pat[n] = pat[n] " " $2
		next
	}
	{ ex = ex $0 "\n" }
	END {
		if (m ~ /[rs]/) ex = rendered()
		t = ex
		if (fam != "nft") {
			lv = ""
			if (own[1] == "IPLOCKDOWN" || cnt["-A OUTPUT -j IPLOCKDOWN"]) lv = jumps("OUTPUT", "IPLOCKDOWN")
			for (i = 1; i <= own[0]; i++) {
				lv = lv body[own[i]]
				ours[own[i]] = 1
			}
			if (("IPLOCKDOWN-FWD" in ours) || cnt["-A FORWARD -j IPLOCKDOWN-FWD"]) lv = lv jumps("FORWARD", "IPLOCKDOWN-FWD") (cnt["-N DOCKER-USER"] ? jumps("DOCKER-USER", "IPLOCKDOWN-FWD") : "")

			ne = split(ex, e, "\n")
			for (i = 1; i <= ne; i++) want[e[i]] = 1
			split(lv, l, "\n")
			for (i in l) have[l[i]] = 1
			t = ""
			for (i = 1; i <= ne; i++) if (e[i] ~ /^-N /) t = t ":" substr(e[i], 4) " - [0:0]\n"
			for (i = 1; i <= own[0]; i++) {
				if (("-N " own[i]) in want) continue
				t = t ":" own[i] " - [0:0]\n"
				st = st "-X " own[i] "\n"
			}
			split("OUTPUT IPLOCKDOWN FORWARD IPLOCKDOWN-FWD DOCKER-USER IPLOCKDOWN-FWD", p, " ")
			for (j = 1; j < 6; j += 2) {
				x = p[j] " 1: -A " p[j] " -j " p[j + 1]
				b = cnt["-A " p[j] " -j " p[j + 1]] + 0
				if ((x in want) && b == 1 && (x in have)) continue
				while (b-- > 0) t = t "-D " p[j] " -j " p[j + 1] "\n"
				if (x in want) t = t "-I " p[j] " 1 -j " p[j + 1] "\n"
			}
			for (i = 1; i <= ne; i++) if (e[i] ~ /^-A IPLOCKDOWN/) t = t e[i] "\n"
			t = t st
			if (t != "") t = "*filter\n" t "COMMIT\n"
		}
		if (m ~ /[rvl]/) printf "%s", lv >(dir "live-" fam)
		if (m == "r") printf "%s", ex >(dir "exp-" fam)
		if (m ~ /[rb]/) printf "%s", t >(dir "tx")
		if (m == "s" && ex != slurp(sd "exp-" fam)) exit 3
		if (m == "s" && lv != slurp(sd "live-" fam)) exit 4
		if (m == "v" && (fam == "nft" ? rules(slurp(dir "exp-" fam)) != rules(lv) : slurp(dir "exp-" fam) != lv)) exit 4
	}' "$WORK/all$FAM" "$src"
}

# Runs the transaction $WORK/tx. An empty iptables transaction changes nothing
# and is skipped.
run_tx() {
	if [ "$FAM" = nft ]; then
		nft -f "$WORK/tx"
	elif [ -s "$WORK/tx" ]; then
		"$TOOL" -w "$WAIT" --noflush <"$WORK/tx"
	fi
}

# Lists the live rules into $WORK/live-$FAM; mode v also checks them (see plan).
read_back() {
	list_live && plan "${1:-l}"
}

save_state() {
	if [ ! -d "$STATE_DIR" ]; then mkdir -p "$STATE_DIR"; fi
	echo "$BACKEND" >"$STATE_DIR/backend"
	cp "$WORK/exp-$FAM" "$WORK/live-$FAM" "$STATE_DIR/"
}

# Prints the addresses that rendered rules ($1) lock.
addresses() {
	sed -n -e 's/^-A IPLOCKDOWN -d \([^ ]*\) -j .*/\1/p' -e 's/^ip6\{0,1\} daddr \([^ ]*\) jump .*/\1/p' "$1" | sort -u
}

# Succeeds when the rules of the last apply are still live and lock every
# address the failed rules would have locked.
previous_rules_cover() {
	if [ ! -f "$STATE_DIR/live-$FAM" ] || ! cmp -s "$WORK/live-$FAM" "$STATE_DIR/live-$FAM"; then return 1; fi
	addresses "$WORK/exp-$FAM" >"$WORK/want"
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
	what="$TOOL failed: $1"
	RC=5
	if [ "$FAM" != nft ] && ! owner_match_works --uid-owner 0; then
		RC=3
		what="$what; the owner match does not work (iptables -m owner, kernel module xt_owner)"
	fi
	read_back || :
	if previous_rules_cover; then
		log error "$what; the previous rules stay in place"
		return
	fi

	sed -e 's/^meta skuid 0-4294967295 //' -e '/ -j RETURN$/d; / return$/d; / -j LOG /d; / log prefix /d' "$WORK/exp-$FAM" >"$WORK/fallback"
	mv "$WORK/fallback" "$WORK/exp-$FAM"
	plan b
	if run_tx 2>"$WORK/err" && read_back; then
		save_state
		log error "$what; a fallback lock now rejects everyone for: $(addresses "$WORK/exp-$FAM" | paste -s -d ' ' -)"
	else
		rm -f "$STATE_DIR/exp-$FAM" "$STATE_DIR/live-$FAM"
		log error "$what; the fallback lock failed too ($(head -n 1 "$WORK/err")), so these may be reachable: $(addresses "$WORK/exp-$FAM" | paste -s -d ' ' -)"
	fi
}

# Applies the rules of family $FAM: reads the live rules, builds the
# transaction, runs it and reads the rules back. When another tool changed the
# rules in between, the transaction fails or reads back wrong, so it is tried
# again. The first try uses the listing detect_backend made.
apply_family() {
	local try=0 error='' listed=1
	TOOL=nft
	if [ "$FAM" != nft ]; then TOOL=ip${FAM#4}tables-restore; fi
	while [ $((try += 1)) -le 3 ]; do
		if [ -z "$listed" ]; then list_live || :; fi
		listed=''
		plan r
		if [ -n "$DRY_RUN" ]; then
			if [ -s "$WORK/tx" ]; then
				if [ "$FAM" = nft ]; then echo '# nft -f -'; else echo "# $TOOL -w $WAIT --noflush"; fi
				cat "$WORK/tx"
			fi
			return
		fi
		if run_tx 2>"$WORK/err" && read_back v; then
			save_state
			return
		fi
		error=$(head -n 2 "$WORK/err" | paste -s -d ' ' -)
		error=${error:-the rules read back differ from the rules applied}
		log warning "attempt $try of 3: $TOOL failed: $error"
		# NOTE: a kernel whose owner match predates --suppl-groups rejects it.
		# Then groups are expanded to the users resolved now.
		if [ "$try" = 3 ] && grep -q -- ' --suppl-groups ' "$WORK/exp-$FAM" && ! owner_match_works --gid-owner 0 --suppl-groups; then
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
	for f in "$WORK"/*.conf; do
		if [ ! -f "$f" ]; then continue; fi
		hit='' kept=''
		while IFS= read -r line || [ -n "$line" ]; do
			set -f
			# shellcheck disable=SC2086 # split the line into words, with globbing off
			set -- $line
			set +f
			if [ $# = 2 ] && [ "$1" = address ]; then
				if canon_ip "$2" && [ "$IP" = "$UNLOCK" ]; then
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

# Makes the saved locks equal to those in $WORK, replacing each file atomically.
save_config() {
	local f
	if [ ! -d "$CONF_DIR" ]; then mkdir -p "$CONF_DIR"; fi
	for f in "$CONF_DIR"/*.conf; do
		if [ -f "$f" ] && [ ! -f "$WORK/${f##*/}" ]; then rm "$f"; fi
	done
	for f in "$WORK"/*.conf; do
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
	if [ ! -d "${LOCK_FILE%/*}" ]; then mkdir -p "${LOCK_FILE%/*}"; fi
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

# Copies the saved locks to $WORK and applies the requested change there.
prepare_locks() {
	local f value
	set --
	for f in "$CONF_DIR"/*.conf; do
		if [ -f "$f" ]; then set -- "$@" "$f"; fi
	done
	if [ $# -gt 0 ]; then cp "$@" "$WORK/"; fi
	case $MODE in
	config) cp "$CONFIG" "$WORK/$NAME.conf" ;;
	unlock) unlock_address ;;
	classic)
		{
			echo "# Saved by $PROG from the command line."
			for value in $IPS; do echo "address $value"; done
			for value in $USERS; do echo "user $value"; done
			for value in $GROUP_NAMES; do echo "group $value"; done
			if [ -n "$LOG_BLOCKED" ]; then echo log-blocked; fi
			for value in $PATTERNS; do echo "block-forwarded $value"; done
		} >"$WORK/$NAME.conf"
		;;
	esac
}

# Saves the requested change and applies every saved lock.
apply_locks() {
	local summary_text
	if [ -z "$DRY_RUN" ]; then take_lock; fi
	prepare_locks
	load_locks
	detect_backend
	resolve_locks
	if [ -f "$STATE_DIR/no-suppl-groups" ]; then SUPPL=''; fi
	if [ "$FAMS" = 4 ] && [ -n "$HAS6" ]; then die 3 "IPv6 addresses are locked, but ip6tables does not work"; fi
	skip_unused_ipv6
	if [ -z "$DRY_RUN" ]; then save_config; fi

	for FAM in $FAMS; do apply_family; done

	summary_text="$LOCKS locks, $ADDRS addresses, $VARIANT"
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
	local key value id applied='' rc drift=''
	prepare_locks
	load_locks
	detect_backend
	resolve_locks
	if [ -f "$STATE_DIR/no-suppl-groups" ]; then SUPPL=''; fi
	skip_unused_ipv6
	if [ "$LOCKS" = 0 ]; then echo 'no locks saved'; fi
	while read -r key value id; do
		case $key in
		n) echo "lock $value" ;;
		a?) echo "  address $value" ;;
		u) echo "  user $value (uid $id)" ;;
		g) echo "  group $value (gid $id)" ;;
		x) echo "  $value $id: not found, locked out" ;;
		l) echo '  log-blocked' ;;
		b) echo "  block-forwarded $value" ;;
		esac
	done <"$WORK/res"
	echo "backend: $BACKEND ($VARIANT)"

	if [ -r "$STATE_DIR/backend" ]; then read -r applied <"$STATE_DIR/backend" || :; fi
	if [ "$applied" != "$BACKEND" ]; then drift='nothing applied with this backend since boot'; fi
	for FAM in $FAMS; do
		if [ -n "$drift" ]; then break; fi
		rc=0
		plan s || rc=$?
		case $rc in
		0) ;;
		4) drift='the live rules were changed, flushed or pushed down since the last apply' ;;
		*) drift='the configuration or its users or groups changed since the last apply' ;;
		esac
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
	ADDRS=0 HAS6='' TOOL=''

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
			checked_ip "$1" --unlock
			UNLOCK=$IP
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
					checked_ip "$value" argument
					case "$IPS " in *" $IP "*) ;; *) IPS="$IPS $IP" ;; esac
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
